-- done: T9/T10 — success with retention 0 (or RevokeTask): the task is deleted.
-- KEYS[1] active list          asynq:{q}:active
-- KEYS[2] lease zset           asynq:{q}:lease
-- KEYS[3] task hash            asynq:{q}:t:<id>
-- KEYS[4] processed daily      asynq:{q}:processed:<date>
-- KEYS[5] processed total      asynq:{q}:processed
-- KEYS[6] unique lock from msg.unique_key (only with Q.locks_kept_until_ttl, when set)
-- ARGV[1] task id
-- ARGV[2] now_ms
-- ARGV[3] daily counter deadline in virtual ms
-- The reference releases the lock named by the hash's unique_key (read here, not in KEYS).
-- Reply: {"OK"} | {"NOT_FOUND"}
local refused = leave_active(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
if refused then
    return refused
end
-- Asynq (Q.locks_kept_until_ttl) releases the lock the message names; group-unique hashes have no unique_key.
local lock = KEYS[6]
if not Q.locks_kept_until_ttl then
    lock = redis.call("HGET", KEYS[3], "unique_key")
end
if redis.call("DEL", KEYS[3]) == 0 then
    -- Only reachable with Q.late_guards: Asynq's DEL guard, after the LREM and ZREM.
    return refuse("NOT_FOUND")
end
release_lock(lock, ARGV[1], ARGV[2])
count(KEYS[4], KEYS[5], ARGV[2], ARGV[3])
return ok()
