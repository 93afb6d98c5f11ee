-- delete_expired_completed: T25 — the janitor deletes one batch of expired completed tasks.
-- KEYS[1] completed zset       asynq:{q}:completed
-- ARGV[1] now_s (expired = score <= now_s)
-- ARGV[2] task key prefix      asynq:{q}:t:  (task hashes are computed: prefix .. id)
-- ARGV[3] batch size
-- Reply: {"OK", ids deleted}
local ids = redis.call("ZRANGE", KEYS[1], "-inf", ARGV[1], "BYSCORE", "LIMIT", 0, ARGV[3])
for _, id in ipairs(ids) do
    redis.call("DEL", ARGV[2] .. id)
    redis.call("ZREM", KEYS[1], id)
end
return ok(#ids)
