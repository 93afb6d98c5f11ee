-- archive_all: T33/T34/T35 — archive every task of one index (pending, scheduled, retry) or of
-- one group, delete the index, then trim the archive. Msgs are left unchanged.
-- KEYS[1] source index         asynq:{q}:<state>, or the group zset asynq:{q}:g:<group>
-- KEYS[2] archived zset        asynq:{q}:archived
-- KEYS[3] groups set           asynq:{q}:groups
-- ARGV[1] source state         pending | scheduled | retry | aggregating
-- ARGV[2] task-hash prefix     asynq:{q}:t:
-- ARGV[3] now_ms (virtual; lazy expiry of trimmed tasks' locks)
-- ARGV[4] now_s (the archive score)
-- ARGV[5] archive cutoff in s  (now_s - archive_cutoff; entries scored <= it are trimmed)
-- ARGV[6] archive capacity     (entries kept by the cap trim)
-- ARGV[7] group name (aggregating only; "" otherwise)
-- As Asynq does, the task hashes (ARGV[2] .. id) and trimmed tasks' locks (unique_key) are
-- computed inside; they carry the same {q} tag. Ids without a hash are dropped, not counted.
-- Quirks: inspector_archive_trim_keeps_hashes (Asynq's trim: new ids included, trimmed hashes
-- kept), hset_on_missing_hash (ids without a hash are archived too, as stub hashes
-- {state: archived}, and counted).
-- Reply: {"OK", number of tasks archived}
local new, archived = {}, 0
for _, id in ipairs(index_ids(KEYS[1], ARGV[1])) do
    local task_key = ARGV[2] .. id
    if Q.hset_on_missing_hash or redis.call("EXISTS", task_key) == 1 then
        redis.call("ZADD", KEYS[2], ARGV[4], id)
        redis.call("HSET", task_key, "state", "archived")
        new[id] = true
        archived = archived + 1
    end
end
redis.call("DEL", KEYS[1])
if ARGV[1] == "aggregating" then
    redis.call("SREM", KEYS[3], ARGV[7])
end
inspector_trim(KEYS[2], ARGV[2], new, ARGV[5], ARGV[6], ARGV[3])
return ok(archived)
