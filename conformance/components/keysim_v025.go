//go:build !keysim_janitor_nobatch

package asynq

import (
	"time"

	"github.com/hibiken/asynq/internal/base"
)

// KeysimRevokeTask is the error a handler returns to end its task without retry (v0.25.0+).
var KeysimRevokeTask = RevokeTask

// KeysimJanitor runs the janitor's exec() once (Asynq v0.25.0 and later: with a batch size).
func KeysimJanitor(b base.Broker, queues []string, batch int, lg *KeysimLog) {
	newJanitor(janitorParams{logger: lg.logger(), broker: b, queues: queues,
		interval: time.Second, batchSize: batch}).exec()
}
