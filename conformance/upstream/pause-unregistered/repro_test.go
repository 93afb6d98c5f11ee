package rdb

import (
	"context"
	"testing"

	"github.com/hibiken/asynq/internal/base"
)

// Pause writes asynq:{<qname>}:paused (no TTL) for any queue name, also one
// missing from asynq:queues: a typo, a queue already removed, or a queue paused
// before its first task (which Asynq's own tests do). Nothing lists such a
// queue (Inspector.Queues reads asynq:queues), and every Inspector operation on
// it but Unpause answers QueueNotFound, so the key is kept for good unless
// someone knows its name. A paused queue must be a listed queue.
func TestPauseListsTheQueue(t *testing.T) {
	r := setup(t)
	defer r.Close()
	ctx := context.Background()

	const typo = "defualt"
	if err := r.Pause(typo); err != nil {
		t.Fatalf("Pause(%q) = %v, want nil", typo, err)
	}
	if !r.client.SIsMember(ctx, base.AllQueues, typo).Val() {
		t.Errorf("Pause(%q) wrote %q but %q does not list the queue", typo, base.PausedKey(typo), base.AllQueues)
	}
	queues, err := r.AllQueues()
	if err != nil {
		t.Fatal(err)
	}
	if len(queues) != 1 || queues[0] != typo {
		t.Errorf("AllQueues() = %v after Pause(%q), want [%s]", queues, typo, typo)
	}
}
