-- archive_task: T29 — archive one task (pending, scheduled, retry, completed, or aggregating in
-- its group); the msg is left unchanged; then the archive is trimmed.
-- KEYS[1] task hash            asynq:{q}:t:<id>
-- KEYS[2] pending list         asynq:{q}:pending
-- KEYS[3] scheduled zset       asynq:{q}:scheduled
-- KEYS[4] retry zset           asynq:{q}:retry
-- KEYS[5] archived zset        asynq:{q}:archived
-- KEYS[6] completed zset       asynq:{q}:completed
-- KEYS[7] groups set           asynq:{q}:groups
-- ARGV[1] task id
-- ARGV[2] group-key prefix     asynq:{q}:g:
-- ARGV[3] now_ms (virtual; lazy expiry of trimmed tasks' locks)
-- ARGV[4] now_s (the archive score)
-- ARGV[5] archive cutoff in s  (now_s - archive_cutoff; entries scored <= it are trimmed)
-- ARGV[6] archive capacity     (entries kept by the cap trim)
-- ARGV[7] task-hash prefix     asynq:{q}:t:
-- As Asynq does, keys are computed inside: the group zset (ARGV[2] .. the hash's group), the
-- hashes of trimmed ids (ARGV[7] .. id) and their locks (unique_key); all carry the {q} tag.
-- Quirks: inspector_archive_trim_keeps_hashes (Asynq's trim: by score then rank, new id
-- included, trimmed hashes kept).
-- Reply: {"OK"} | {"NOT_FOUND"} | {"TASK_ACTIVE"} | {"ALREADY"}
local indexes = {pending = KEYS[2], scheduled = KEYS[3], retry = KEYS[4], completed = KEYS[6]}
local state, source, group = find_task(KEYS[1], ARGV[1], indexes, ARGV[2], "archived")
if not state then
    return source  -- find_task's refusal (or Asynq's error) in its place
end
leave_source(state, source, ARGV[1], KEYS[7], group)
redis.call("ZADD", KEYS[5], ARGV[4], ARGV[1])
redis.call("HSET", KEYS[1], "state", "archived")
inspector_trim(KEYS[5], ARGV[7], {[ARGV[1]] = true}, ARGV[5], ARGV[6], ARGV[3])
return ok()
