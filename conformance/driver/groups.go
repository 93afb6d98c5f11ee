//go:build !keysim_nogroups

// Task groups and aggregation (Asynq v0.23.0 and later).
package main

import (
	"bytes"
	"fmt"

	"github.com/google/uuid"
	"github.com/hibiken/asynq/internal/base"
)

// releaseFeatures: what the "features" op reports (this release has groups, and the server
// components the conformance/components shim drives, which arrived with them in v0.23.0).
var releaseFeatures = map[string]bool{"groups": true, "components": true}

func init() {
	clientOps["add_to_group"] = func(d *driver, q *request, m *base.TaskMessage) error {
		return d.r.AddToGroup(ctx(), m, q.Group)
	}
	clientOps["add_to_group_unique"] = func(d *driver, q *request, m *base.TaskMessage) error {
		return d.r.AddToGroupUnique(ctx(), m, q.Group, seconds(q.TTL))
	}
	otherOps["aggregation_check"] = (*driver).aggregationCheck
	otherOps["read_aggregation_set"] = (*driver).readAggregationSet
	otherOps["delete_aggregation_set"] = func(d *driver, q *request) (interface{}, error) {
		return nil, d.r.DeleteAggregationSet(ctx(), q.Queue, q.Group, q.SetID)
	}
	otherOps["reclaim_stale_aggregation_sets"] = (*driver).reclaim
}

func deleteAllAggregating(d *driver, q *request) (interface{}, error) {
	return d.r.DeleteAllAggregatingTasks(q.Queue, q.Group)
}

func archiveAllAggregating(d *driver, q *request) (interface{}, error) {
	return d.r.ArchiveAllAggregatingTasks(q.Queue, q.Group)
}

func runAllAggregating(d *driver, q *request) (interface{}, error) {
	return d.r.RunAllAggregatingTasks(q.Queue, q.Group)
}

func (d *driver) reclaim(q *request) (interface{}, error) {
	n, err := d.due(base.AllAggregationSets(q.Queue))
	if err != nil {
		return nil, err
	}
	return n, d.r.ReclaimStaleAggregationSets(q.Queue)
}

// aggregationCheck: Asynq names the set with uuid.NewString(); a requested set id (a UUID) is
// fed to the uuid package as its random source so that Asynq picks exactly that name.
func (d *driver) aggregationCheck(q *request) (interface{}, error) {
	if q.SetID != "" {
		id, err := uuid.Parse(q.SetID)
		if err != nil || id.String() != q.SetID || id.Version() != 4 || id.Variant() != uuid.RFC4122 {
			return nil, badRequest{fmt.Sprintf("set_id %q is not a canonical random (v4) UUID", q.SetID)}
		}
		uuid.SetRand(bytes.NewReader(id[:]))
		defer uuid.SetRand(nil)
	}
	setID, err := d.r.AggregationCheck(q.Queue, q.Group, d.clock.Now(), seconds(q.Grace),
		seconds(q.MaxDelay), q.MaxSize)
	if err != nil || setID == "" {
		return nil, err
	}
	if q.SetID != "" && setID != q.SetID {
		return nil, fmt.Errorf("asynq named the set %q, not the requested %q", setID, q.SetID)
	}
	return setID, nil
}

func (d *driver) readAggregationSet(q *request) (interface{}, error) {
	msgs, deadline, err := d.r.ReadAggregationSet(q.Queue, q.Group, q.SetID)
	if err != nil {
		return nil, err
	}
	data, err := encodeAll(msgs)
	if err != nil {
		return nil, err
	}
	return aggregationSet{Msgs: data, Deadline: deadline.Unix()}, nil
}
