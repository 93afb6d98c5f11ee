-- delete_task: T28 — delete one task that is not active (pending, scheduled, retry, archived,
-- completed, or aggregating in its group).
-- KEYS[1] task hash            asynq:{q}:t:<id>
-- KEYS[2] pending list         asynq:{q}:pending
-- KEYS[3] scheduled zset       asynq:{q}:scheduled
-- KEYS[4] retry zset           asynq:{q}:retry
-- KEYS[5] archived zset        asynq:{q}:archived
-- KEYS[6] completed zset       asynq:{q}:completed
-- KEYS[7] groups set           asynq:{q}:groups
-- ARGV[1] task id
-- ARGV[2] group-key prefix     asynq:{q}:g:
-- ARGV[3] now_ms (virtual; lazy expiry of the unique lock)
-- As Asynq does, two keys are computed inside: the group zset (ARGV[2] .. the hash's group)
-- and the unique lock (the hash's unique_key field); both carry the same {q} tag.
-- Quirks: inspector_delete_keeps_lock (the lock is never released).
-- Reply: {"OK"} | {"NOT_FOUND"} | {"TASK_ACTIVE"}
local indexes = {pending = KEYS[2], scheduled = KEYS[3], retry = KEYS[4], archived = KEYS[5],
                 completed = KEYS[6]}
local state, source, group = find_task(KEYS[1], ARGV[1], indexes, ARGV[2], nil)
if not state then
    return source  -- find_task's refusal (or Asynq's error) in its place
end
leave_source(state, source, ARGV[1], KEYS[7], group)
if Q.inspector_delete_keeps_lock then
    redis.call("DEL", KEYS[1])
else
    delete_task_hash(KEYS[1], ARGV[1], ARGV[3])
end
return ok()
