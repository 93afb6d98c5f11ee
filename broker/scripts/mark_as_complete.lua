-- mark_as_complete: T11/T12 — success with retention > 0: the task is kept as completed.
-- KEYS[1] active list          asynq:{q}:active
-- KEYS[2] lease zset           asynq:{q}:lease
-- KEYS[3] completed zset       asynq:{q}:completed
-- KEYS[4] task hash            asynq:{q}:t:<id>
-- KEYS[5] processed daily      asynq:{q}:processed:<date>
-- KEYS[6] processed total      asynq:{q}:processed
-- KEYS[7] unique lock from msg.unique_key (only with Q.locks_kept_until_ttl, when set)
-- ARGV[1] task id
-- ARGV[2] msg (encoded TaskMessage with completed_at = now)
-- ARGV[3] expiry score (now_s + msg.retention)
-- ARGV[4] now_ms
-- ARGV[5] daily counter deadline in virtual ms
-- The reference releases the lock named by the hash's unique_key (read here, not in KEYS).
-- Reply: {"OK"} | {"NOT_FOUND"}; an Asynq variant may fail part-way (error reply)
local refused = leave_active(KEYS[1], KEYS[2], KEYS[4], ARGV[1])
if refused then
    return refused
end
if redis.call("ZADD", KEYS[3], ARGV[3], ARGV[1]) == 0 then
    -- The id was already completed. Both Asynq forms fail after LREM, ZREM and ZADD.
    if Q.complete_fails_after_writes then
        error("attempt to index field 'redis' (a nil value)")  -- v0.19–v0.23 typo
    elseif Q.late_guards then
        return redis.error_reply("INTERNAL")
    end
end
redis.call("HSET", KEYS[4], "msg", ARGV[2], "state", "completed")
local lock = KEYS[7]
if not Q.locks_kept_until_ttl then
    lock = redis.call("HGET", KEYS[4], "unique_key")
end
release_lock(lock, ARGV[1], ARGV[4])
count(KEYS[5], KEYS[6], ARGV[4], ARGV[5])
return ok()
