-- enqueue: T1 (and T2 when a lock is given) — a new task, ready now.
-- KEYS[1] task hash            asynq:{q}:t:<id>
-- KEYS[2] pending list         asynq:{q}:pending
-- KEYS[3] unique lock          asynq:{q}:unique:<type>:<md5>  (only for enqueue_unique)
-- ARGV[1] msg (encoded TaskMessage)
-- ARGV[2] task id
-- ARGV[3] now_ns (pending_since)
-- ARGV[4] now_ms
-- ARGV[5] lock deadline in virtual ms (only for enqueue_unique)
-- Reply: {"OK"} | {"CONFLICT"} | {"DUPLICATE"}
local unique = KEYS[3] ~= nil
if unique and Q.lock_taken_before_id_check then
    -- Asynq: the lock is taken before the id is checked, and stays on a conflict.
    expire_due(KEYS[3], ARGV[4])
    if not redis.call("SET", KEYS[3], ARGV[2], "NX") then
        return refuse("DUPLICATE")
    end
    set_deadline(KEYS[3], ARGV[5])
end
if redis.call("EXISTS", KEYS[1]) == 1 then
    return refuse("CONFLICT")
end
if unique and not Q.lock_taken_before_id_check then
    expire_due(KEYS[3], ARGV[4])
    if not redis.call("SET", KEYS[3], ARGV[2], "NX") then
        return refuse("DUPLICATE")
    end
    set_deadline(KEYS[3], ARGV[5])
end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "pending", "pending_since", ARGV[3])
if unique then
    redis.call("HSET", KEYS[1], "unique_key", KEYS[3])
end
redis.call("LPUSH", KEYS[2], ARGV[2])
return ok()
