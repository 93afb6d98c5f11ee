-- delete_expired_archived: the reference janitor's archive cutoff (no Asynq row) — one batch.
-- KEYS[1] archived zset        asynq:{q}:archived
-- ARGV[1] cutoff (now_s - archive_cutoff): entries with score <= cutoff are deleted
-- ARGV[2] task key prefix      asynq:{q}:t:  (task hashes are computed: prefix .. id)
-- ARGV[3] batch size
-- ARGV[4] now_ms
-- Locks are read from the hashes' unique_key (not in KEYS).
-- Reply: {"OK", ids deleted}
local ids = redis.call("ZRANGE", KEYS[1], "-inf", ARGV[1], "BYSCORE", "LIMIT", 0, ARGV[3])
for _, id in ipairs(ids) do
    drop_archived(KEYS[1], ARGV[2], id, ARGV[4], false)
end
return ok(#ids)
