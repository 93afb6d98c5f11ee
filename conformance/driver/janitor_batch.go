//go:build !keysim_janitor_nobatch

package main

import "github.com/hibiken/asynq/internal/rdb"

// deleteExpiredCompleted: Asynq v0.25.0 and later take the janitor's batch size.
func deleteExpiredCompleted(r *rdb.RDB, qname string, batch int) error {
	return r.DeleteExpiredCompletedTasks(qname, batch)
}
