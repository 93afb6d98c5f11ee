-- list_lease_expired: T18 (read-only) — messages of tasks whose lease ended by a cutoff.
-- KEYS[1] lease zset           asynq:{q}:lease
-- ARGV[1] cutoff (Unix seconds): leases with score <= cutoff
-- ARGV[2] task key prefix      asynq:{q}:t:  (task hashes are computed: prefix .. id)
-- Reply: {"OK", msg...} in (score, id) order; ids whose hash has no msg are skipped (as Asynq)
local out = {"OK"}
for _, id in ipairs(redis.call("ZRANGE", KEYS[1], "-inf", ARGV[1], "BYSCORE")) do
    local msg = redis.call("HGET", ARGV[2] .. id, "msg")
    if msg then
        table.insert(out, msg)
    end
end
return out
