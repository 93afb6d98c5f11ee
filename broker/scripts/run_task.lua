-- run_task: T30 — make one task pending now (from scheduled, retry, archived, completed, or
-- aggregating in its group). No pending_since is written, as in Asynq.
-- KEYS[1] task hash            asynq:{q}:t:<id>
-- KEYS[2] pending list         asynq:{q}:pending
-- KEYS[3] scheduled zset       asynq:{q}:scheduled
-- KEYS[4] retry zset           asynq:{q}:retry
-- KEYS[5] archived zset        asynq:{q}:archived
-- KEYS[6] completed zset       asynq:{q}:completed
-- KEYS[7] groups set           asynq:{q}:groups
-- ARGV[1] task id
-- ARGV[2] group-key prefix     asynq:{q}:g:
-- As Asynq does, the group zset is computed inside (ARGV[2] .. the hash's group; same {q} tag).
-- Reply: {"OK"} | {"NOT_FOUND"} | {"TASK_ACTIVE"} | {"ALREADY"}
local indexes = {scheduled = KEYS[3], retry = KEYS[4], archived = KEYS[5], completed = KEYS[6]}
local state, source, group = find_task(KEYS[1], ARGV[1], indexes, ARGV[2], "pending")
if not state then
    return source  -- find_task's refusal (or Asynq's error) in its place
end
leave_source(state, source, ARGV[1], KEYS[7], group)
redis.call("LPUSH", KEYS[2], ARGV[1])
redis.call("HSET", KEYS[1], "state", "pending")
return ok()
