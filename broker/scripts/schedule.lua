-- schedule: T3 (and T4 when a lock is given) — a new task for later.
-- KEYS[1] task hash            asynq:{q}:t:<id>
-- KEYS[2] scheduled zset       asynq:{q}:scheduled
-- KEYS[3] unique lock          asynq:{q}:unique:<type>:<md5>  (only for schedule_unique)
-- ARGV[1] msg (encoded TaskMessage)
-- ARGV[2] task id
-- ARGV[3] process_at (Unix seconds; the score)
-- ARGV[4] group name from msg.group_key, "" for none
-- ARGV[5] now_ms
-- ARGV[6] lock deadline in virtual ms (only for schedule_unique)
-- Reply: {"OK"} | {"CONFLICT"} | {"DUPLICATE"}
local unique = KEYS[3] ~= nil
if unique and Q.lock_taken_before_id_check and not take_lock(KEYS[3], ARGV[2], ARGV[5], ARGV[6]) then
    -- Asynq: the lock is taken before the id is checked, and stays on a conflict.
    return refuse("DUPLICATE")
end
if redis.call("EXISTS", KEYS[1]) == 1 then
    return refuse("CONFLICT")
end
if unique and not Q.lock_taken_before_id_check and not take_lock(KEYS[3], ARGV[2], ARGV[5], ARGV[6]) then
    return refuse("DUPLICATE")
end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "scheduled")
if ARGV[4] ~= "" and not Q.schedule_no_group then
    -- Asynq never stores the group here, so the task is later forwarded to pending.
    redis.call("HSET", KEYS[1], "group", ARGV[4])
end
if unique then
    redis.call("HSET", KEYS[1], "unique_key", KEYS[3])
end
redis.call("ZADD", KEYS[2], ARGV[3], ARGV[2])
return ok()
