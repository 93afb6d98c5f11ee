-- run_all: T31/T32 — make every task of one zset (scheduled, retry, archived) or of one group
-- pending, in (score, id) order, then delete the source. No pending_since, as in Asynq.
-- KEYS[1] source index         asynq:{q}:<state>, or the group zset asynq:{q}:g:<group>
-- KEYS[2] pending list         asynq:{q}:pending
-- KEYS[3] groups set           asynq:{q}:groups
-- ARGV[1] source state         scheduled | retry | archived | aggregating
-- ARGV[2] task-hash prefix     asynq:{q}:t:
-- ARGV[3] group name (aggregating only; "" otherwise)
-- As Asynq does, the task hashes (ARGV[2] .. id) are computed inside; same {q} tag.
-- Ids without a hash are dropped and not counted.
-- Quirks: hset_on_missing_hash (ids without a hash are run too, as stub hashes {state: pending},
-- and counted).
-- Reply: {"OK", number of tasks made pending}
local moved = 0
for _, id in ipairs(index_ids(KEYS[1], ARGV[1])) do
    local task_key = ARGV[2] .. id
    if Q.hset_on_missing_hash or redis.call("EXISTS", task_key) == 1 then
        redis.call("LPUSH", KEYS[2], id)
        redis.call("HSET", task_key, "state", "pending")
        moved = moved + 1
    end
end
redis.call("DEL", KEYS[1])
if ARGV[1] == "aggregating" then
    redis.call("SREM", KEYS[3], ARGV[3])
end
return ok(moved)
