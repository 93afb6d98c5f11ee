package rdb

import (
	"context"
	"sort"
	"testing"
	"time"

	"github.com/hibiken/asynq/internal/base"
	"github.com/hibiken/asynq/internal/errors"
	h "github.com/hibiken/asynq/internal/testutil"
	"github.com/redis/go-redis/v9"
)

// queueKeys lists every key left under the queue's prefix.
func queueKeys(t *testing.T, r *RDB, qname string) []string {
	t.Helper()
	keys, err := r.client.Keys(context.Background(), base.QueueKeyPrefix(qname)+"*").Result()
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	return keys
}

// seedQueueBeyondTheMainIndexes writes what a queue holds besides its pending,
// active, scheduled, retry and archived tasks: a completed task, an aggregating
// group, a staged aggregation set, the paused flag and the stats counters.
func seedQueueBeyondTheMainIndexes(t *testing.T, r *RDB, qname string) {
	t.Helper()
	ctx := context.Background()
	now := time.Now()
	completed := h.NewTaskMessageWithQueue("completed", nil, qname)
	h.SeedCompletedQueue(t, r.client, []base.Z{{Message: completed, Score: now.Add(time.Hour).Unix()}}, qname)
	grouped := h.NewTaskMessageWithQueue("grouped", nil, qname)
	grouped.GroupKey = "g1"
	h.SeedGroup(t, r.client, []base.Z{{Message: grouped, Score: now.Unix()}}, qname, "g1")
	staged := h.NewTaskMessageWithQueue("staged", nil, qname)
	staged.GroupKey = "g2"
	h.SeedAggregationSet(t, r.client, []base.Z{{Message: staged, Score: now.Unix()}}, qname, "g2", "set1")
	setKey := base.AggregationSetKey(qname, "g2", "set1")
	if err := r.client.ZAdd(ctx, base.AllAggregationSets(qname), redis.Z{Member: setKey, Score: float64(now.Add(time.Minute).Unix())}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := r.Pause(qname); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{base.ProcessedTotalKey(qname), base.FailedTotalKey(qname)} {
		r.client.Set(ctx, key, 3, 0)
	}
	for _, key := range []string{base.ProcessedKey(qname, now), base.FailedKey(qname, now)} {
		r.client.Set(ctx, key, 3, 90*24*time.Hour)
	}
}

// RemoveQueue(force) must delete every key of the queue. Whatever it leaves is
// unreachable afterwards: every Inspector call on a removed queue answers
// QueueNotFound, so completed tasks, aggregating groups, counters and the
// paused flag stay in Redis for good (and come back if the name is reused).
func TestRemoveQueueForceDeletesEveryKeyOfTheQueue(t *testing.T) {
	r := setup(t)
	defer r.Close()
	const qname = "default"
	unique := h.NewTaskMessage("unique", nil)
	unique.UniqueKey = base.UniqueKey(qname, unique.Type, nil)
	h.SeedPendingQueue(t, r.client, []*base.TaskMessage{unique}, qname)
	seedQueueBeyondTheMainIndexes(t, r, qname)

	if err := r.RemoveQueue(qname, true); err != nil {
		t.Fatalf("RemoveQueue(%q, true) = %v, want nil", qname, err)
	}
	if left := queueKeys(t, r, qname); len(left) != 0 {
		t.Errorf("RemoveQueue(%q, true) left %d keys of the removed queue: %v", qname, len(left), left)
	}
}

// Without force, RemoveQueue removes only an empty queue. Aggregating tasks are
// tasks of the queue (QueueInfo.Aggregating counts them in Size), so a queue
// holding some is not empty; completed tasks are not counted in Size and are
// removed with the queue.
func TestRemoveQueueWithoutForce(t *testing.T) {
	r := setup(t)
	defer r.Close()
	const qname = "default"

	grouped := h.NewTaskMessage("grouped", nil)
	grouped.GroupKey = "g1"
	h.SeedGroup(t, r.client, []base.Z{{Message: grouped, Score: time.Now().Unix()}}, qname, "g1")
	if err := r.RemoveQueue(qname, false); !errors.IsQueueNotEmpty(err) {
		t.Errorf("RemoveQueue(%q, false) on a queue with an aggregating task = %v, want QueueNotEmptyError", qname, err)
	}
	if got := h.GetGroupEntries(t, r.client, qname, "g1"); len(got) != 1 {
		t.Errorf("group g1 holds %d tasks after the refused RemoveQueue, want 1", len(got))
	}

	h.FlushDB(t, r.client)
	completed := h.NewTaskMessage("completed", nil)
	h.SeedCompletedQueue(t, r.client, []base.Z{{Message: completed, Score: time.Now().Add(time.Hour).Unix()}}, qname)
	if err := r.RemoveQueue(qname, false); err != nil {
		t.Fatalf("RemoveQueue(%q, false) on a queue with only a completed task = %v, want nil", qname, err)
	}
	if left := queueKeys(t, r, qname); len(left) != 0 {
		t.Errorf("RemoveQueue(%q, false) left %d keys of the removed queue: %v", qname, len(left), left)
	}
}
