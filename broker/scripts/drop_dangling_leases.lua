-- drop_dangling_leases: part of T19 (reference only) — lease ids whose task hash is gone.
-- KEYS[1] lease zset           asynq:{q}:lease
-- KEYS[2] active list          asynq:{q}:active
-- ARGV[1] cutoff (Unix seconds): leases with score <= cutoff
-- ARGV[2] task key prefix      asynq:{q}:t:  (task hashes are computed: prefix .. id)
-- An expired lease whose hash vanished (eviction, a manual DEL) can never be recovered: no
-- message to retry. The reference heals it (ZREM lease, LREM active); Asynq skips it (BZ-7).
-- Reply: {"OK", dropped}
local dropped = 0
for _, id in ipairs(redis.call("ZRANGE", KEYS[1], "-inf", ARGV[1], "BYSCORE")) do
    if redis.call("EXISTS", ARGV[2] .. id) == 0 then
        redis.call("ZREM", KEYS[1], id)
        redis.call("LREM", KEYS[2], 0, id)
        dropped = dropped + 1
    end
end
return ok(dropped)
