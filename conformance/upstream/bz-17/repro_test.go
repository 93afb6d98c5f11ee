package rdb

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq/internal/base"
	h "github.com/hibiken/asynq/internal/testutil"
	"github.com/hibiken/asynq/internal/timeutil"
	"github.com/redis/go-redis/v9"
)

// An index may hold an id whose task hash is gone: Redis evicted the hash under
// maxmemory, a script failed half-way, or someone deleted the key. Dequeue must
// skip such an id and hand out the next task. Asynq's dequeue script writes
// {state: active} into the missing hash, puts the id in active and lease, and,
// finding no message, tells the processor the queue is empty. The stub stays
// in active and lease for good (the recoverer skips ids without a message),
// and the real task behind it waits for the next poll.
func TestDequeueSkipsIdsWithoutTaskHash(t *testing.T) {
	r := setup(t)
	defer r.Close()
	ctx := context.Background()
	now := time.Now()
	r.SetClock(timeutil.NewSimulatedClock(now))
	const qname = "default"

	dangling := uuid.NewString()
	r.client.SAdd(ctx, base.AllQueues, qname)
	r.client.LPush(ctx, base.PendingKey(qname), dangling) // the oldest entry, dequeued first
	msg := h.NewTaskMessage("send_email", nil)
	h.SeedPendingQueue(t, r.client, []*base.TaskMessage{msg}, qname)

	got, _, err := r.Dequeue(qname)
	if err != nil {
		t.Errorf("Dequeue(%q) = %v, want the pending task %s", qname, err, msg.ID)
	} else if got.ID != msg.ID {
		t.Errorf("Dequeue(%q) returned task %s, want %s", qname, got.ID, msg.ID)
	}
	if n := r.client.Exists(ctx, base.TaskKey(qname, dangling)).Val(); n != 0 {
		t.Errorf("Dequeue created a stub hash %q for an id without a task: %v", base.TaskKey(qname, dangling),
			r.client.HGetAll(ctx, base.TaskKey(qname, dangling)).Val())
	}
	if r.client.ZScore(ctx, base.LeaseKey(qname), dangling).Err() != redis.Nil {
		t.Errorf("id %s without a task was leased", dangling)
	}
	if active := r.client.LRange(ctx, base.ActiveKey(qname), 0, -1).Val(); len(active) != 1 || active[0] != msg.ID {
		t.Errorf("active = %v, want [%s]", active, msg.ID)
	}
	if pending := r.client.LLen(ctx, base.PendingKey(qname)).Val(); pending != 0 {
		t.Errorf("pending holds %d ids, want 0", pending)
	}
}

// ForwardIfReady moves due scheduled and retry tasks to pending. An id whose
// hash is gone must not be forwarded: Asynq writes {state: pending} into the
// missing hash and pushes the id to pending, where Dequeue trips over it.
func TestForwardIfReadySkipsIdsWithoutTaskHash(t *testing.T) {
	r := setup(t)
	defer r.Close()
	ctx := context.Background()
	now := time.Now()
	r.SetClock(timeutil.NewSimulatedClock(now))
	const qname = "default"

	dangling := uuid.NewString()
	r.client.SAdd(ctx, base.AllQueues, qname)
	r.client.ZAdd(ctx, base.ScheduledKey(qname), redis.Z{Member: dangling, Score: float64(now.Add(-time.Minute).Unix())})
	msg := h.NewTaskMessage("send_email", nil)
	h.SeedScheduledQueue(t, r.client, []base.Z{{Message: msg, Score: now.Add(-time.Minute).Unix()}}, qname)

	if err := r.ForwardIfReady(qname); err != nil {
		t.Fatalf("ForwardIfReady(%q) = %v", qname, err)
	}
	if n := r.client.Exists(ctx, base.TaskKey(qname, dangling)).Val(); n != 0 {
		t.Errorf("ForwardIfReady created a stub hash %q for an id without a task: %v", base.TaskKey(qname, dangling),
			r.client.HGetAll(ctx, base.TaskKey(qname, dangling)).Val())
	}
	if pending := r.client.LRange(ctx, base.PendingKey(qname), 0, -1).Val(); len(pending) != 1 || pending[0] != msg.ID {
		t.Errorf("pending = %v, want [%s]", pending, msg.ID)
	}
	if n := r.client.ZCard(ctx, base.ScheduledKey(qname)).Val(); n != 0 {
		t.Errorf("scheduled holds %d ids, want 0", n)
	}
}
