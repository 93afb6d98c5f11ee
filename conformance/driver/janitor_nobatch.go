//go:build keysim_janitor_nobatch

package main

import (
	"fmt"

	"github.com/hibiken/asynq/internal/rdb"
)

// deleteExpiredCompleted: before v0.25.0 the janitor's batch size is fixed at 100.
func deleteExpiredCompleted(r *rdb.RDB, qname string, batch int) error {
	if batch != 100 {
		return badRequest{fmt.Sprintf("this Asynq version has a fixed janitor batch of 100, got %d", batch)}
	}
	return r.DeleteExpiredCompletedTasks(qname)
}
