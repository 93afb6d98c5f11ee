package rdb

import (
	"context"
	"fmt"

	"github.com/hibiken/asynq/internal/base"
	"github.com/hibiken/asynq/internal/errors"
	"github.com/redis/go-redis/v9"
)

// WriteResult wrote the result with a bare HSET, which re-creates the task's
// hash when the task is gone. fix.patch makes WriteResult call
// writeResultOfExistingTask, which writes only into the hash of a task that
// still exists (has its message) and reports TaskNotFoundError otherwise.

// writeResultCmd: KEYS[1] task key; ARGV[1] result.
// Returns 1 when written, 0 when the task has no hash (or no message).
var writeResultCmd = redis.NewScript(`
if redis.call("HEXISTS", KEYS[1], "msg") == 0 then
	return 0
end
redis.call("HSET", KEYS[1], "result", ARGV[1])
return 1
`)

func (r *RDB) writeResultOfExistingTask(ctx context.Context, op errors.Op, qname, taskID string, data []byte) (int, error) {
	res, err := writeResultCmd.Run(ctx, r.client, []string{base.TaskKey(qname, taskID)}, data).Int()
	if err != nil {
		return 0, errors.E(op, errors.Unknown, &errors.RedisCommandError{Command: "evalsha", Err: err})
	}
	switch res {
	case 1:
		return len(data), nil
	case 0:
		return 0, errors.E(op, errors.NotFound, &errors.TaskNotFoundError{Queue: qname, ID: taskID})
	default:
		return 0, errors.E(op, errors.Internal, fmt.Sprintf("unexpected return value from writeResultCmd: %d", res))
	}
}
