-- forward: T17 — one batch of ready scheduled (or retry) tasks moves to pending or its group.
-- KEYS[1] source zset          asynq:{q}:scheduled or asynq:{q}:retry
-- KEYS[2] pending list         asynq:{q}:pending
-- KEYS[3] groups set           asynq:{q}:groups
-- ARGV[1] now_s (ready = score <= now_s; the group score)
-- ARGV[2] task key prefix      asynq:{q}:t:  (task hashes are computed: prefix .. id)
-- ARGV[3] now_ns (pending_since)
-- ARGV[4] group key prefix     asynq:{q}:g:  (group zsets are computed: prefix .. group)
-- ARGV[5] batch size
-- Reply: {"OK", ids taken from the source, ids moved}
local ids = redis.call("ZRANGE", KEYS[1], "-inf", ARGV[1], "BYSCORE", "LIMIT", 0, ARGV[5])
local moved = 0
for _, id in ipairs(ids) do
    local task_key = ARGV[2] .. id
    local group = redis.call("HGET", task_key, "group")
    if not Q.hset_on_missing_hash and redis.call("EXISTS", task_key) == 0 then
        -- reference: a dangling id is dropped; Asynq forwards it, creating a stub hash
        redis.call("ZREM", KEYS[1], id)
    elseif group and group ~= "" then
        redis.call("ZADD", ARGV[4] .. group, ARGV[1], id)
        if not Q.forward_leaves_group_unlisted then
            redis.call("SADD", KEYS[3], group)
        end
        redis.call("ZREM", KEYS[1], id)
        redis.call("HSET", task_key, "state", "aggregating")
        moved = moved + 1
    else
        redis.call("LPUSH", KEYS[2], id)
        redis.call("ZREM", KEYS[1], id)
        redis.call("HSET", task_key, "state", "pending", "pending_since", ARGV[3])
        moved = moved + 1
    end
end
return ok(#ids, moved)
