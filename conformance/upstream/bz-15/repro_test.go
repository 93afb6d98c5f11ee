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

// A burst of failures followed by a quiet period leaves many archived tasks
// older than archivedExpirationInDays. The next Archive trims them; it must do
// so whatever their number. Asynq's archive script deletes their hashes, then
// removes their ids with one ZREM of the unpacked list, which Lua refuses from
// about 8000 elements ("too many results to unpack"). The script has already
// deleted the hashes and taken the task out of active and lease: the ids
// dangle in the archive, the task being archived is left "active" in no index
// (never recovered), and every later Archive of the queue fails the same way.
func TestArchiveTrimsManyExpiredTasks(t *testing.T) {
	r := setup(t)
	defer r.Close()
	ctx := context.Background()
	now := time.Now()
	r.SetClock(timeutil.NewSimulatedClock(now))
	const qname = "default"
	const expired = 8000

	pipe := r.client.Pipeline()
	for i := 0; i < expired; i++ {
		msg := h.NewTaskMessage("failed_long_ago", nil)
		pipe.ZAdd(ctx, base.ArchivedKey(qname), redis.Z{Member: msg.ID, Score: float64(now.AddDate(0, 0, -91).Unix())})
		pipe.HSet(ctx, base.TaskKey(qname, msg.ID), "msg", h.MustMarshal(t, msg), "state", "archived")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}

	for i := 0; i < 2; i++ {
		msg := h.NewTaskMessage("failing", nil)
		h.SeedActiveQueue(t, r.client, []*base.TaskMessage{msg}, qname)
		h.SeedLease(t, r.client, []base.Z{{Message: msg, Score: now.Add(30 * time.Second).Unix()}}, qname)

		if err := r.Archive(ctx, msg, "failed"); err != nil {
			t.Errorf("Archive #%d with %d expired archived tasks: %v", i+1, expired, err)
		}
		if state := r.client.HGet(ctx, base.TaskKey(qname, msg.ID), "state").Val(); state != "archived" {
			t.Errorf("Archive #%d: task %s has state %q, want archived", i+1, msg.ID, state)
		}
		if r.client.ZScore(ctx, base.ArchivedKey(qname), msg.ID).Err() != nil {
			t.Errorf("Archive #%d: task %s is not in the archive", i+1, msg.ID)
		}
	}
	if n := r.client.ZCard(ctx, base.ArchivedKey(qname)).Val(); n != 2 {
		t.Errorf("archive holds %d ids, want the 2 just archived (the %d expired ones trimmed)", n, expired)
	}
	if n := len(r.client.Keys(ctx, base.TaskKeyPrefix(qname)+"*").Val()); n != 2 {
		t.Errorf("%d task hashes left, want the 2 just archived", n)
	}
}
