-- unpause: T27 — the queue is dequeued again.
-- KEYS[1] paused flag          asynq:{q}:paused
-- ARGV: none
-- Reply: {"OK"} | {"ALREADY"}
if redis.call("DEL", KEYS[1]) == 0 then
    return refuse("ALREADY")
end
return ok()
