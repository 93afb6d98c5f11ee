-- pause: T27 — the queue stops being dequeued.
-- KEYS[1] paused flag          asynq:{q}:paused
-- ARGV[1] now_s (the value; no TTL)
-- Reply: {"OK"} | {"ALREADY"}
if not redis.call("SET", KEYS[1], ARGV[1], "NX") then
    return refuse("ALREADY")
end
return ok()
