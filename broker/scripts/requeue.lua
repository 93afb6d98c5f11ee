-- requeue: T13 — shutdown abort: the task goes back to pending, next to be dequeued.
-- KEYS[1] active list          asynq:{q}:active
-- KEYS[2] lease zset           asynq:{q}:lease
-- KEYS[3] pending list         asynq:{q}:pending
-- KEYS[4] task hash            asynq:{q}:t:<id>
-- ARGV[1] task id
-- Reply: {"OK"} | {"NOT_FOUND"}
local refused = leave_active(KEYS[1], KEYS[2], KEYS[4], ARGV[1])
if refused then
    return refused
end
redis.call("RPUSH", KEYS[3], ARGV[1])
-- As Asynq: no pending_since.
redis.call("HSET", KEYS[4], "state", "pending")
return ok()
