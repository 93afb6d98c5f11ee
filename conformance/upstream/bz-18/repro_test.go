package rdb

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq/internal/base"
	"github.com/hibiken/asynq/internal/errors"
	h "github.com/hibiken/asynq/internal/testutil"
	"github.com/hibiken/asynq/internal/timeutil"
)

// ResultWriter.Write (RDB.WriteResult) writes the result into the task's hash.
// It must not bring a task back once the task is gone: the handler's context
// is cancelled only after Done returns, so a write from a goroutine the handler
// started, or any write after the janitor deleted a completed task, lands after
// the deletion. Asynq's HSET then creates a hash holding only the result: no
// message, no state, in no index, without TTL. It is never deleted, and
// DeleteTask cannot delete it (its script fails on the missing state).
func TestWriteResultAfterTheTaskIsGone(t *testing.T) {
	r := setup(t)
	defer r.Close()
	ctx := context.Background()
	now := time.Now()
	r.SetClock(timeutil.NewSimulatedClock(now))
	const qname = "default"

	msg := h.NewTaskMessage("send_email", nil)
	h.SeedActiveQueue(t, r.client, []*base.TaskMessage{msg}, qname)
	h.SeedLease(t, r.client, []base.Z{{Message: msg, Score: now.Add(30 * time.Second).Unix()}}, qname)

	// While the task is active, the handler's result is stored.
	if n, err := r.WriteResult(qname, msg.ID, []byte("partial")); err != nil || n != len("partial") {
		t.Fatalf("WriteResult on an active task = %d, %v, want %d, nil", n, err, len("partial"))
	}
	if got := r.client.HGet(ctx, base.TaskKey(qname, msg.ID), "result").Val(); got != "partial" {
		t.Fatalf("result = %q, want %q", got, "partial")
	}

	// Done deletes the task (no retention); a late write must not re-create it.
	if err := r.Done(ctx, msg); err != nil {
		t.Fatalf("Done: %v", err)
	}
	if _, err := r.WriteResult(qname, msg.ID, []byte("late")); !errors.IsTaskNotFound(err) {
		t.Errorf("WriteResult after Done deleted the task = %v, want a TaskNotFoundError", err)
	}
	taskKey := base.TaskKey(qname, msg.ID)
	if n := r.client.Exists(ctx, taskKey).Val(); n != 0 {
		t.Errorf("WriteResult re-created the deleted task as %q = %v (no message, no state, no index, no TTL)",
			taskKey, r.client.HGetAll(ctx, taskKey).Val())
		if err := r.DeleteTask(qname, msg.ID); err != nil {
			t.Errorf("and DeleteTask cannot delete it: %v", err)
		}
	}
}
