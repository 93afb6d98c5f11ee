package rdb

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq/internal/base"
	h "github.com/hibiken/asynq/internal/testutil"
	"github.com/hibiken/asynq/internal/timeutil"
)

// When an aggregation set is not deleted in time (the aggregated task could
// not be enqueued, the server stopped), ReclaimStaleAggregationSets puts its
// tasks back into their group. The group must then be listed in the queue's
// groups registry again: the aggregator visits only listed groups. If
// AggregationCheck had emptied the group (and so unlisted it), Asynq's reclaim
// script leaves the group unlisted, and its tasks stay "aggregating" for good,
// unless some later task happens to be added to the same group.
func TestReclaimStaleAggregationSetsListsTheGroupAgain(t *testing.T) {
	r := setup(t)
	defer r.Close()
	ctx := context.Background()
	now := time.Now()
	clock := timeutil.NewSimulatedClock(now)
	r.SetClock(clock)
	const qname, gname = "default", "mygroup"

	msg := h.NewTaskMessage("grouped", nil)
	msg.GroupKey = gname
	if err := r.AddToGroup(ctx, msg, gname); err != nil {
		t.Fatal(err)
	}
	setID, err := r.AggregationCheck(qname, gname, now.Add(time.Minute), time.Second, time.Hour, 0)
	if err != nil || setID == "" {
		t.Fatalf("AggregationCheck = %q, %v; want an aggregation set", setID, err)
	}
	// The set is never deleted; after aggregationTimeout it is stale.
	clock.SetTime(now.Add(aggregationTimeout + time.Minute))
	if err := r.ReclaimStaleAggregationSets(qname); err != nil {
		t.Fatal(err)
	}

	if got := h.GetGroupEntries(t, r.client, qname, gname); len(got) != 1 || got[0].Message.ID != msg.ID {
		t.Fatalf("group %q = %v after reclaim, want task %s back", gname, got, msg.ID)
	}
	groups, err := r.ListGroups(qname)
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) != 1 || groups[0] != gname {
		t.Errorf("ListGroups(%q) = %v after reclaim, want [%s]: %q holds a task but is not listed in %q",
			qname, groups, gname, base.GroupKey(qname, gname), base.AllGroups(qname))
	}
}
