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

// A unique enqueue whose TaskID is already taken fails with ErrTaskIdConflict
// and must leave nothing behind. Asynq's unique scripts take the uniqueness
// lock (SET NX) before they look for the id, so the refused call still holds
// the lock, owned by the other task's id, for the whole TTL: every unique
// enqueue of that type and payload fails with ErrDuplicateTask meanwhile,
// although no such task was ever enqueued.
func TestUniqueEnqueueWithConflictingIDTakesNoLock(t *testing.T) {
	r := setup(t)
	defer r.Close()
	ctx := context.Background()
	now := time.Now()
	r.SetClock(timeutil.NewSimulatedClock(now))
	const qname = "default"

	tests := []struct {
		desc    string
		enqueue func(msg *base.TaskMessage) error
	}{
		{"EnqueueUnique", func(msg *base.TaskMessage) error { return r.EnqueueUnique(ctx, msg, time.Hour) }},
		{"ScheduleUnique", func(msg *base.TaskMessage) error {
			return r.ScheduleUnique(ctx, msg, now.Add(time.Hour), time.Hour)
		}},
		{"AddToGroupUnique", func(msg *base.TaskMessage) error {
			msg.GroupKey = "mygroup"
			return r.AddToGroupUnique(ctx, msg, "mygroup", time.Hour)
		}},
	}

	for _, tc := range tests {
		h.FlushDB(t, r.client)
		existing := h.NewTaskMessage("send_email", h.JSON(map[string]interface{}{"to": "a"}))
		h.SeedPendingQueue(t, r.client, []*base.TaskMessage{existing}, qname)

		msg := h.NewTaskMessage("send_email", h.JSON(map[string]interface{}{"to": "b"}))
		msg.ID = existing.ID
		msg.UniqueKey = base.UniqueKey(qname, msg.Type, msg.Payload)
		if err := tc.enqueue(msg); !errors.Is(err, errors.ErrTaskIdConflict) {
			t.Errorf("%s with a taken TaskID = %v, want ErrTaskIdConflict", tc.desc, err)
			continue
		}
		if owner, err := r.client.Get(ctx, msg.UniqueKey).Result(); err == nil {
			t.Errorf("%s refused with ErrTaskIdConflict still took the unique lock %q (owner %s)",
				tc.desc, msg.UniqueKey, owner)
		}
	}
}
