-- delete_all: T36/T37/T38 — delete every task of one index (pending, scheduled, retry,
-- archived, completed) or of one group, then the index itself.
-- KEYS[1] source index         asynq:{q}:<state>, or the group zset asynq:{q}:g:<group>
-- KEYS[2] groups set           asynq:{q}:groups
-- ARGV[1] source state         pending | scheduled | retry | archived | completed | aggregating
-- ARGV[2] task-hash prefix     asynq:{q}:t:
-- ARGV[3] now_ms (virtual; lazy expiry of the unique locks)
-- ARGV[4] group name (aggregating only; "" otherwise)
-- As Asynq does, the task hashes (ARGV[2] .. id) and their locks (unique_key) are computed
-- inside; they carry the same {q} tag. Ids without a hash are dropped and not counted.
-- Quirks: inspector_delete_keeps_lock (locks never released), locks_kept_until_ttl (not released
-- for pending and aggregating), bulk_delete_counts_every_id (ids without a hash are counted).
-- Reply: {"OK", number of tasks deleted}
local state = ARGV[1]
local keep_locks = Q.inspector_delete_keeps_lock
    or (Q.locks_kept_until_ttl and (state == "pending" or state == "aggregating"))
local deleted = 0
for _, id in ipairs(index_ids(KEYS[1], state)) do
    local task_key = ARGV[2] .. id
    if Q.bulk_delete_counts_every_id or redis.call("EXISTS", task_key) == 1 then
        deleted = deleted + 1
        if keep_locks then
            redis.call("DEL", task_key)
        else
            delete_task_hash(task_key, id, ARGV[3])
        end
    end
end
redis.call("DEL", KEYS[1])
if state == "aggregating" then
    redis.call("SREM", KEYS[2], ARGV[4])
end
return ok(deleted)
