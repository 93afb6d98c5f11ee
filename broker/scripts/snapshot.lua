-- snapshot: read every key of one queue (read-only), with its expiry; the caller judges the
-- (virtual) TTLs, so a snapshot taken before the clock moves stays usable after.
-- KEYS[1] queue prefix  asynq:{q}: (no key has that name: it names the queue's Cluster slot,
--         so the call runs where the queue's keys are; they are found by SCAN over it)
-- ARGV[1] MATCH pattern for the queue's keys (glob-escaped prefix followed by *)
-- ARGV[2] SCAN COUNT hint
-- Reply: flat list of {key, type, deadline, value...} entries, one table per key, where
-- deadline is the virtual deadline (ms), -1 without a TTL, and value is: string -> {s}; list -> items; set -> members;
-- zset -> member, score, ...; hash -> field, value, ...
local out = {}
each_key(ARGV[1], ARGV[2], function(key)
    local deadline = virtual_deadline(key) or -1
    local kind = redis.call("TYPE", key)["ok"]
    local value
    if kind == "string" then
        value = {redis.call("GET", key)}
    elseif kind == "list" then
        value = redis.call("LRANGE", key, 0, -1)
    elseif kind == "set" then
        value = redis.call("SMEMBERS", key)
    elseif kind == "zset" then
        value = redis.call("ZRANGE", key, 0, -1, "WITHSCORES")
    elseif kind == "hash" then
        value = redis.call("HGETALL", key)
    else
        value = {}
    end
    table.insert(out, {key, kind, deadline, value})
end)
return out
