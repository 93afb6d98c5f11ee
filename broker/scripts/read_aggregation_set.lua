-- read_aggregation_set: T22 (read-only) — an aggregation set's messages and its deadline.
-- KEYS[1] aggregation set      asynq:{q}:g:<group>:<set_id>
-- KEYS[2] aggregation_sets     asynq:{q}:aggregation_sets
-- ARGV[1] task key prefix      asynq:{q}:t:  (task hashes are computed: prefix .. id)
-- Quirk: read_set_keeps_missing_messages (an empty msg for a member whose hash is gone).
-- Reply: {"OK", deadline, msg...} in set order | {"NOT_FOUND"} when the set has no deadline
local deadline = redis.call("ZSCORE", KEYS[2], KEYS[1])
if not deadline then
    return refuse("NOT_FOUND")
end
local out = {"OK", deadline}
for _, id in ipairs(redis.call("ZRANGE", KEYS[1], 0, -1)) do
    local msg = redis.call("HGET", ARGV[1] .. id, "msg")
    if msg then
        table.insert(out, msg)
    elseif Q.read_set_keeps_missing_messages then
        table.insert(out, "")  -- Asynq decodes the missing msg as an empty message
    end
end
return out
