-- extend_lease: T20 — the heartbeat renews the leases that still exist (ZADD XX).
-- KEYS[1] lease zset           asynq:{q}:lease
-- ARGV[1] new lease expiry (now_s + lease_duration)
-- ARGV[2..] task ids
-- Reply: {"OK", how many ids had a lease}
local n = 0
for i = 2, #ARGV do
    if redis.call("ZSCORE", KEYS[1], ARGV[i]) then
        redis.call("ZADD", KEYS[1], "XX", ARGV[1], ARGV[i])
        n = n + 1
    end
end
return ok(n)
