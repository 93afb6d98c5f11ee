-- retry: T14 (is_failure = 1) and T15 (is_failure = 0) — a failed attempt waits in retry.
-- KEYS[1] active list          asynq:{q}:active
-- KEYS[2] lease zset           asynq:{q}:lease
-- KEYS[3] retry zset           asynq:{q}:retry
-- KEYS[4] task hash            asynq:{q}:t:<id>
-- KEYS[5] processed daily      asynq:{q}:processed:<date>
-- KEYS[6] processed total      asynq:{q}:processed
-- KEYS[7] failed daily         asynq:{q}:failed:<date>
-- KEYS[8] failed total         asynq:{q}:failed
-- ARGV[1] task id
-- ARGV[2] msg (encoded TaskMessage: error, last_failed_at, retried+1 when it counts)
-- ARGV[3] retry_at (Unix seconds; the score)
-- ARGV[4] is_failure: "1" counts processed and failed, "0" counts nothing
-- ARGV[5] now_ms
-- ARGV[6] daily counter deadline in virtual ms
-- Reply: {"OK"} | {"NOT_FOUND"}
local refused = leave_active(KEYS[1], KEYS[2], KEYS[4], ARGV[1])
if refused then
    return refused
end
redis.call("ZADD", KEYS[3], ARGV[3], ARGV[1])
redis.call("HSET", KEYS[4], "msg", ARGV[2], "state", "retry")
if ARGV[4] == "1" then
    count(KEYS[5], KEYS[6], ARGV[5], ARGV[6])
    count(KEYS[7], KEYS[8], ARGV[5], ARGV[6])
end
return ok()
