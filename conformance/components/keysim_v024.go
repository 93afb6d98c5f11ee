//go:build keysim_janitor_nobatch

package asynq

import (
	"time"

	"github.com/hibiken/asynq/internal/base"
)

// KeysimRevokeTask: before v0.25.0 a handler cannot revoke its task (nil: not offered).
var KeysimRevokeTask error

// KeysimJanitor runs the janitor's exec() once (before v0.25.0 Asynq's batch is fixed at 100).
func KeysimJanitor(b base.Broker, queues []string, _ int, lg *KeysimLog) {
	newJanitor(janitorParams{logger: lg.logger(), broker: b, queues: queues,
		interval: time.Second}).exec()
}
