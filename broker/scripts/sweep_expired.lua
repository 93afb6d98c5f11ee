-- sweep_expired: delete every key of one queue whose virtual deadline has passed, as Redis's own
-- expiry would have by now. Not an Asynq operation: the environment's clock, one round trip.
-- KEYS[1] queue prefix  asynq:{q}: (no key has that name: it names the queue's Cluster slot,
--         so the call runs where the queue's keys are; they are found by SCAN over it)
-- ARGV[1] MATCH pattern for the queue's keys (glob-escaped prefix followed by *)
-- ARGV[2] now_ms (virtual)
-- ARGV[3] SCAN COUNT hint
-- Reply: {"OK", number of keys deleted}
local swept = 0
each_key(ARGV[1], ARGV[3], function(key)
    local deadline = virtual_deadline(key)
    if deadline ~= nil and deadline <= tonumber(ARGV[2]) then
        redis.call("DEL", key)
        swept = swept + 1
    end
end)
return ok(swept)
