-- dequeue: T8 — the tail of pending becomes active, with a lease.
-- KEYS[1] pending list         asynq:{q}:pending
-- KEYS[2] paused flag          asynq:{q}:paused
-- KEYS[3] active list          asynq:{q}:active
-- KEYS[4] lease zset           asynq:{q}:lease
-- ARGV[1] lease expiry (now_s + lease_duration)
-- ARGV[2] task key prefix      asynq:{q}:t:  (the task hash is computed here: prefix .. id)
-- Reply: {"OK", msg} | {"OK"} when paused or empty (or, Q.hset_on_missing_hash, when the id had no hash)
if redis.call("EXISTS", KEYS[2]) == 1 then
    return ok()
end
while true do
    local id = redis.call("RPOP", KEYS[1])
    if not id then
        return ok()
    end
    local task_key = ARGV[2] .. id
    if Q.hset_on_missing_hash or redis.call("EXISTS", task_key) == 1 then
        -- Asynq moves the id whatever its hash; a missing hash becomes a stub {state=active}
        -- and the nil msg reads as "queue empty", stranding the stub in active and lease.
        redis.call("LPUSH", KEYS[3], id)
        redis.call("HSET", task_key, "state", "active")
        redis.call("HDEL", task_key, "pending_since")
        redis.call("ZADD", KEYS[4], ARGV[1], id)
        local msg = redis.call("HGET", task_key, "msg")
        if not msg then
            return ok()
        end
        return ok(msg)
    end
    -- reference: an id without a hash is dropped, and the next one is tried
end
