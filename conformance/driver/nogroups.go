//go:build keysim_nogroups

// Releases before v0.23.0 have no task groups: every group operation answers "unsupported"
// (and the stateful machine does not draw them, see broker/asynq_go.py).
package main

import (
	"fmt"

	"github.com/hibiken/asynq/internal/base"
)

// releaseFeatures: what the "features" op reports (this release has no groups, and its server
// components differ from those the conformance/components shim drives: the shim and
// components.go are left out of its build).
var releaseFeatures = map[string]bool{"groups": false, "components": false}

func init() {
	for _, op := range []string{"add_to_group", "add_to_group_unique"} {
		name := op
		clientOps[name] = func(*driver, *request, *base.TaskMessage) error { return noGroups(name) }
	}
	for _, op := range []string{"aggregation_check", "read_aggregation_set",
		"delete_aggregation_set", "reclaim_stale_aggregation_sets"} {
		name := op
		otherOps[name] = func(*driver, *request) (interface{}, error) { return nil, noGroups(name) }
	}
}

func noGroups(op string) error {
	return unsupported{fmt.Sprintf("%s: this Asynq release has no task groups (added in v0.23.0)", op)}
}

func deleteAllAggregating(*driver, *request) (interface{}, error) {
	return nil, noGroups("delete_all_tasks(aggregating)")
}

func archiveAllAggregating(*driver, *request) (interface{}, error) {
	return nil, noGroups("archive_all_tasks(aggregating)")
}

func runAllAggregating(*driver, *request) (interface{}, error) {
	return nil, noGroups("run_all_tasks(aggregating)")
}
