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

// The inspector's archive operations trim the archive (entries older than
// archivedExpirationInDays, then everything over maxArchiveSize). A trimmed
// task must disappear completely: its hash too, as the server's Archive does.
// A hash left behind is archived, in no index and without a TTL: memory that
// is never reclaimed, a TaskID that can never be reused, and a task that
// GetTaskInfo still shows but DeleteTask cannot delete.
func TestInspectorArchiveTrimDeletesTaskHashes(t *testing.T) {
	r := setup(t)
	defer r.Close()
	now := time.Now()
	r.SetClock(timeutil.NewSimulatedClock(now))
	const qname = "default"
	const gname = "mygroup"

	tests := []struct {
		desc    string
		seed    func(msg *base.TaskMessage)
		archive func(msg *base.TaskMessage) error
	}{
		{
			desc: "ArchiveTask",
			seed: func(msg *base.TaskMessage) { h.SeedPendingQueue(t, r.client, []*base.TaskMessage{msg}, qname) },
			archive: func(msg *base.TaskMessage) error {
				return r.ArchiveTask(qname, msg.ID)
			},
		},
		{
			desc: "ArchiveAllPendingTasks",
			seed: func(msg *base.TaskMessage) { h.SeedPendingQueue(t, r.client, []*base.TaskMessage{msg}, qname) },
			archive: func(*base.TaskMessage) error {
				_, err := r.ArchiveAllPendingTasks(qname)
				return err
			},
		},
		{
			desc: "ArchiveAllRetryTasks",
			seed: func(msg *base.TaskMessage) {
				h.SeedRetryQueue(t, r.client, []base.Z{{Message: msg, Score: now.Add(time.Hour).Unix()}}, qname)
			},
			archive: func(*base.TaskMessage) error {
				_, err := r.ArchiveAllRetryTasks(qname)
				return err
			},
		},
		{
			desc: "ArchiveAllScheduledTasks",
			seed: func(msg *base.TaskMessage) {
				h.SeedScheduledQueue(t, r.client, []base.Z{{Message: msg, Score: now.Add(time.Hour).Unix()}}, qname)
			},
			archive: func(*base.TaskMessage) error {
				_, err := r.ArchiveAllScheduledTasks(qname)
				return err
			},
		},
		{
			desc: "ArchiveAllAggregatingTasks",
			seed: func(msg *base.TaskMessage) {
				msg.GroupKey = gname
				h.SeedGroup(t, r.client, []base.Z{{Message: msg, Score: now.Unix()}}, qname, gname)
			},
			archive: func(*base.TaskMessage) error {
				_, err := r.ArchiveAllAggregatingTasks(qname, gname)
				return err
			},
		},
	}

	for _, tc := range tests {
		h.FlushDB(t, r.client)
		expired := h.NewTaskMessage("expired", nil)
		h.SeedArchivedQueue(t, r.client, []base.Z{{Message: expired, Score: now.AddDate(0, 0, -91).Unix()}}, qname)
		msg := h.NewTaskMessage("fresh", nil)
		tc.seed(msg)

		if err := tc.archive(msg); err != nil {
			t.Errorf("%s: archive failed: %v", tc.desc, err)
			continue
		}
		if got := h.GetArchivedEntries(t, r.client, qname); len(got) != 1 || got[0].Message.ID != msg.ID {
			t.Errorf("%s: archived = %v, want only the task just archived (%s)", tc.desc, got, msg.ID)
		}
		if n := r.client.Exists(context.Background(), base.TaskKey(qname, expired.ID)).Val(); n != 0 {
			t.Errorf("%s: the task trimmed from the archive (older than %d days) kept its hash %q: "+
				"archived, in no index, without TTL", tc.desc, archivedExpirationInDays, base.TaskKey(qname, expired.ID))
		}
	}
}

// The size cap: archiving one more task into a full archive drops the oldest
// entry, and with it the task's hash.
func TestInspectorArchiveCapDeletesTaskHashes(t *testing.T) {
	r := setup(t)
	defer r.Close()
	now := time.Now()
	r.SetClock(timeutil.NewSimulatedClock(now))
	const qname = "default"
	ctx := context.Background()

	// A full archive: maxArchiveSize-1 recent entries (the cap keeps that many),
	// written in one pipeline; the oldest one is scored first.
	var oldest string
	pipe := r.client.Pipeline()
	for i := 0; i < maxArchiveSize-1; i++ {
		msg := h.NewTaskMessage("archived", nil)
		if i == 0 {
			oldest = msg.ID
		}
		pipe.ZAdd(ctx, base.ArchivedKey(qname), redis.Z{Member: msg.ID, Score: float64(now.Add(-time.Hour).Unix() + int64(i))})
		pipe.HSet(ctx, base.TaskKey(qname, msg.ID), "msg", h.MustMarshal(t, msg), "state", "archived")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	msg := h.NewTaskMessage("fresh", nil)
	h.SeedPendingQueue(t, r.client, []*base.TaskMessage{msg}, qname)

	if err := r.ArchiveTask(qname, msg.ID); err != nil {
		t.Fatalf("ArchiveTask failed: %v", err)
	}
	if n := r.client.ZCard(ctx, base.ArchivedKey(qname)).Val(); n != maxArchiveSize-1 {
		t.Errorf("archived has %d entries, want %d", n, maxArchiveSize-1)
	}
	if r.client.ZScore(ctx, base.ArchivedKey(qname), oldest).Err() != redis.Nil {
		t.Fatalf("the oldest archived entry %s was not trimmed", oldest)
	}
	if n := r.client.Exists(ctx, base.TaskKey(qname, oldest)).Val(); n != 0 {
		t.Errorf("the task trimmed by the archive's size cap kept its hash %q: archived, in no index, without TTL",
			base.TaskKey(qname, oldest))
	}
}
