-- add_to_group: T5 (and T6 when a lock is given) — a new task waiting in a group.
-- KEYS[1] task hash            asynq:{q}:t:<id>
-- KEYS[2] group zset           asynq:{q}:g:<group>
-- KEYS[3] groups set           asynq:{q}:groups
-- KEYS[4] unique lock          asynq:{q}:unique:<type>:<md5>  (only for add_to_group_unique)
-- ARGV[1] msg (encoded TaskMessage, group_key = the group)
-- ARGV[2] task id
-- ARGV[3] now_s (the score)
-- ARGV[4] group name
-- ARGV[5] now_ms
-- ARGV[6] lock deadline in virtual ms (only for add_to_group_unique)
-- Reply: {"OK"} | {"CONFLICT"} | {"DUPLICATE"}
local unique = KEYS[4] ~= nil
if unique and Q.lock_taken_before_id_check and not take_lock(KEYS[4], ARGV[2], ARGV[5], ARGV[6]) then
    -- Asynq: the lock is taken before the id is checked, and stays on a conflict.
    return refuse("DUPLICATE")
end
if redis.call("EXISTS", KEYS[1]) == 1 then
    return refuse("CONFLICT")
end
if unique and not Q.lock_taken_before_id_check and not take_lock(KEYS[4], ARGV[2], ARGV[5], ARGV[6]) then
    return refuse("DUPLICATE")
end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "aggregating", "group", ARGV[4])
if unique and not Q.locks_kept_until_ttl then
    -- Asynq writes no unique_key here, so nothing ever releases this lock early.
    redis.call("HSET", KEYS[1], "unique_key", KEYS[4])
end
redis.call("ZADD", KEYS[2], ARGV[3], ARGV[2])
redis.call("SADD", KEYS[3], ARGV[4])
return ok()
