package rdb

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq/internal/base"
	h "github.com/hibiken/asynq/internal/testutil"
	"github.com/hibiken/asynq/internal/timeutil"
)

// A task that was added to a group and then run early (Inspector RunTask or
// RunAllAggregatingTasks keep its group field) and failed comes back from the
// retry set into its group through ForwardIfReady. The group must then be
// listed in the queue's groups registry, which the aggregator reads. Asynq's
// forward script adds the task to the group without listing it, so the task
// stays "aggregating" for good unless another task is added to that group.
func TestForwardIfReadyListsTheGroup(t *testing.T) {
	r := setup(t)
	defer r.Close()
	ctx := context.Background()
	now := time.Now()
	r.SetClock(timeutil.NewSimulatedClock(now))
	const qname, gname = "default", "mygroup"

	msg := h.NewTaskMessage("grouped", nil)
	msg.GroupKey = gname
	if err := r.AddToGroup(ctx, msg, gname); err != nil {
		t.Fatal(err)
	}
	if err := r.RunTask(qname, msg.ID); err != nil {
		t.Fatalf("RunTask: %v", err)
	}
	got, _, err := r.Dequeue(qname)
	if err != nil || got.ID != msg.ID {
		t.Fatalf("Dequeue = %v, %v; want task %s", got, err, msg.ID)
	}
	if err := r.Retry(ctx, got, now.Add(-time.Second), "failed", true); err != nil {
		t.Fatalf("Retry: %v", err)
	}
	if err := r.ForwardIfReady(qname); err != nil {
		t.Fatalf("ForwardIfReady: %v", err)
	}

	if entries := h.GetGroupEntries(t, r.client, qname, gname); len(entries) != 1 || entries[0].Message.ID != msg.ID {
		t.Fatalf("group %q = %v after forward, want task %s", gname, entries, msg.ID)
	}
	groups, err := r.ListGroups(qname)
	if err != nil {
		t.Fatal(err)
	}
	if len(groups) != 1 || groups[0] != gname {
		t.Errorf("ListGroups(%q) = %v after forward, want [%s]: %q holds a task but is not listed in %q",
			qname, groups, gname, base.GroupKey(qname, gname), base.AllGroups(qname))
	}
}
