-- aggregation_check: T21 — stage a ready group's tasks into a new aggregation set.
-- KEYS[1] group zset           asynq:{q}:g:<group>
-- KEYS[2] aggregation set      asynq:{q}:g:<group>:<set_id>
-- KEYS[3] aggregation_sets     asynq:{q}:aggregation_sets
-- KEYS[4] groups set           asynq:{q}:groups
-- ARGV[1] max_size (0 = unlimited)
-- ARGV[2] max_delay in seconds (0 = off)
-- ARGV[3] grace period in seconds
-- ARGV[4] set deadline (now_s + aggregation_timeout)
-- ARGV[5] now_s
-- ARGV[6] group name
-- Reply: {"OK", 1} when a set was created, {"OK", 0} otherwise
local size = redis.call("ZCARD", KEYS[1])
if size == 0 then
    return ok(0)
end
local max_size = tonumber(ARGV[1])
local now = tonumber(ARGV[5])

-- How many of the lowest-ranked ids to move; 0 when the group is not ready.
local function due()
    if max_size > 0 and size >= max_size then
        return max_size
    end
    local max_delay = tonumber(ARGV[2])
    if max_delay > 0 then
        local oldest = redis.call("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")
        if tonumber(oldest[2]) <= now - max_delay then
            return size
        end
    end
    local newest = redis.call("ZRANGE", KEYS[1], -1, -1, "WITHSCORES")
    if tonumber(newest[2]) <= now - tonumber(ARGV[3]) then
        return size
    end
    return 0
end

local n = due()
if n == 0 then
    return ok(0)
end
local staged = redis.call("ZRANGE", KEYS[1], 0, n - 1, "WITHSCORES")
for i = 1, #staged, 2 do
    redis.call("ZADD", KEYS[2], staged[i + 1], staged[i])
end
redis.call("ZREMRANGEBYRANK", KEYS[1], 0, n - 1)
redis.call("ZADD", KEYS[3], ARGV[4], KEYS[2])
if n == size and not Q.emptied_group_stays_listed then
    redis.call("SREM", KEYS[4], ARGV[6])
end
return ok(1)
