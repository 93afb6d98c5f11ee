-- reclaim_stale_aggregation_sets: T24 — sets whose deadline passed go back into their groups.
-- KEYS[1] aggregation_sets     asynq:{q}:aggregation_sets
-- KEYS[2] groups set           asynq:{q}:groups
-- ARGV[1] now_s (stale = deadline <= now_s)
-- ARGV[2] group key prefix     asynq:{q}:g:
-- Set keys come from KEYS[1]; a set key is prefix .. <group> .. ":" .. <set_id>, and a group
-- name has no ':', so the group (and its zset, prefix .. group) is computed from the set key.
-- Reply: {"OK", sets reclaimed}
local stale = redis.call("ZRANGE", KEYS[1], "-inf", ARGV[1], "BYSCORE")
for _, set_key in ipairs(stale) do
    local rest = string.sub(set_key, #ARGV[2] + 1)
    local group = string.sub(rest, 1, string.find(rest, ":", 1, true) - 1)
    local group_key = ARGV[2] .. group
    local members = redis.call("ZRANGE", set_key, 0, -1, "WITHSCORES")
    for i = 1, #members, 2 do
        redis.call("ZADD", group_key, members[i + 1], members[i])
    end
    if #members > 0 and not Q.reclaim_leaves_group_unlisted then
        redis.call("SADD", KEYS[2], group)
    end
    redis.call("DEL", set_key)
end
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", ARGV[1])
return ok(#stale)
