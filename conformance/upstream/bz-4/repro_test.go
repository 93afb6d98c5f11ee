package rdb

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq/internal/base"
	h "github.com/hibiken/asynq/internal/testutil"
	"github.com/hibiken/asynq/internal/timeutil"
	"github.com/redis/go-redis/v9"
)

// lockOwner returns the id holding the unique lock, or "" if the lock is free.
func lockOwner(t *testing.T, r *RDB, uniqueKey string) string {
	t.Helper()
	owner, err := r.client.Get(context.Background(), uniqueKey).Result()
	if err == redis.Nil {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return owner
}

// Deleting a unique task releases its lock, so that the same task can be
// enqueued again at once: DeleteTask and DeleteAll{Scheduled,Retry,Archived,
// Completed}Tasks do so. DeleteAllPendingTasks must as well; it keeps the lock
// until its TTL, and every Enqueue of that task until then fails with
// ErrDuplicateTask although no such task exists.
func TestDeleteAllPendingTasksReleasesUniqueLocks(t *testing.T) {
	r := setup(t)
	defer r.Close()
	const qname = "default"
	unique := h.NewTaskMessage("unique", h.JSON(map[string]interface{}{"n": 1}))
	unique.UniqueKey = base.UniqueKey(qname, unique.Type, unique.Payload)
	// A pending task whose lock was taken over by another task (after its TTL):
	// deleting it must leave the other task's lock alone.
	stale := h.NewTaskMessage("unique", h.JSON(map[string]interface{}{"n": 2}))
	stale.UniqueKey = base.UniqueKey(qname, stale.Type, stale.Payload)
	h.SeedPendingQueue(t, r.client, []*base.TaskMessage{unique, stale}, qname)
	r.client.Set(context.Background(), stale.UniqueKey, "another-task", time.Minute)

	n, err := r.DeleteAllPendingTasks(qname)
	if err != nil || n != 2 {
		t.Fatalf("DeleteAllPendingTasks(%q) = %d, %v, want 2, nil", qname, n, err)
	}
	if owner := lockOwner(t, r, unique.UniqueKey); owner != "" {
		t.Errorf("unique lock %q is still held by deleted task %s", unique.UniqueKey, owner)
	}
	if owner := lockOwner(t, r, stale.UniqueKey); owner != "another-task" {
		t.Errorf("unique lock %q = %q, want it kept by its owner another-task", stale.UniqueKey, owner)
	}
}

// A task added with AddToGroupUnique holds a unique lock like any unique task.
// The lock must be released when the task is deleted (DeleteTask,
// DeleteAllAggregatingTasks) and when its aggregation set is deleted after the
// aggregated task was enqueued (DeleteAggregationSet). Asynq's group script
// does not record the lock on the task (no unique_key field), so none of these
// release it.
func TestGroupUniqueLockReleasedWithItsTask(t *testing.T) {
	r := setup(t)
	defer r.Close()
	ctx := context.Background()
	now := time.Now()
	r.SetClock(timeutil.NewSimulatedClock(now))
	const qname, gname = "default", "mygroup"

	tests := []struct {
		desc   string
		delete func(msg *base.TaskMessage) error
	}{
		{
			desc:   "DeleteTask",
			delete: func(msg *base.TaskMessage) error { return r.DeleteTask(qname, msg.ID) },
		},
		{
			desc: "DeleteAllAggregatingTasks",
			delete: func(*base.TaskMessage) error {
				_, err := r.DeleteAllAggregatingTasks(qname, gname)
				return err
			},
		},
		{
			desc: "AggregationCheck then DeleteAggregationSet",
			delete: func(*base.TaskMessage) error {
				setID, err := r.AggregationCheck(qname, gname, now.Add(time.Minute), time.Second, time.Hour, 0)
				if err != nil {
					return err
				}
				if setID == "" {
					t.Fatal("AggregationCheck staged no aggregation set")
				}
				return r.DeleteAggregationSet(ctx, qname, gname, setID)
			},
		},
	}

	for _, tc := range tests {
		h.FlushDB(t, r.client)
		// r remembers that it registered the queue before the flush.
		r.client.SAdd(ctx, base.AllQueues, qname)
		msg := h.NewTaskMessage("grouped", nil)
		msg.GroupKey = gname
		msg.UniqueKey = base.UniqueKey(qname, msg.Type, msg.Payload)
		if err := r.AddToGroupUnique(ctx, msg, gname, time.Hour); err != nil {
			t.Fatalf("%s: AddToGroupUnique: %v", tc.desc, err)
		}
		if err := tc.delete(msg); err != nil {
			t.Errorf("%s: %v", tc.desc, err)
			continue
		}
		if n := r.client.Exists(ctx, base.TaskKey(qname, msg.ID)).Val(); n != 0 {
			t.Errorf("%s: task %s was not deleted", tc.desc, msg.ID)
		}
		if owner := lockOwner(t, r, msg.UniqueKey); owner != "" {
			t.Errorf("%s: unique lock %q is still held by deleted task %s", tc.desc, msg.UniqueKey, owner)
		}
	}
}
