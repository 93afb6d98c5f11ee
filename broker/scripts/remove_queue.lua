-- remove_queue: T40 (force = 0) / T41 (force = 1) — delete every key of a queue. Non-force
-- refuses a queue holding any task, group or aggregation set; force refuses one with an active
-- task. Python SREMs asynq:queues afterwards (a global key, in another slot).
-- KEYS[1] pending list         asynq:{q}:pending
-- KEYS[2] active list          asynq:{q}:active
-- KEYS[3] scheduled zset       asynq:{q}:scheduled
-- KEYS[4] retry zset           asynq:{q}:retry
-- KEYS[5] archived zset        asynq:{q}:archived
-- KEYS[6] lease zset           asynq:{q}:lease
-- KEYS[7] completed zset       asynq:{q}:completed
-- KEYS[8] groups set           asynq:{q}:groups
-- KEYS[9] aggregation_sets     asynq:{q}:aggregation_sets
-- KEYS[10] and on: other keys of the queue, by SCAN MATCH asynq:{q}:* (none with remove_queue_leaves_keys)
-- ARGV[1] force                1 or 0
-- ARGV[2] task-hash prefix     asynq:{q}:t:
-- ARGV[3] group-key prefix     asynq:{q}:g:
-- ARGV[4] queue prefix         asynq:{q}:
-- As Asynq does, keys reachable from the indexes are computed inside: task hashes (ARGV[2] ..
-- id), group zsets (ARGV[3] .. name), aggregation sets and locks named in values (used only
-- when they start with ARGV[4]), so a key written after the SCAN goes too. All share {q}.
-- Quirks: remove_queue_leaves_keys (Asynq: only KEYS[1..5] are checked; only KEYS[1..6] and the
-- hashes of the ids in KEYS[1..5] are deleted; completed, groups, aggregation sets, paused,
-- counters and locks stay).
-- Reply: {"OK"} | {"QUEUE_NOT_EMPTY"} | {"TASK_ACTIVE"}
local FIXED = 9
local force = ARGV[1] == "1"

local function starts(key, prefix)
    return string.sub(key, 1, #prefix) == prefix
end

-- True when KEYS[i] holds a task, a group or an aggregation set (a non-force refusal).
local function holds_tasks(i)
    local key = KEYS[i]
    if i > FIXED and not (starts(key, ARGV[2]) or starts(key, ARGV[3])) then
        return false
    end
    return redis.call("EXISTS", key) == 1
end

local function index_kind(i)
    return (i <= 2) and "pending" or "zset"
end

-- DEL the hashes of the ids in `key` (and, in the reference, the locks they name).
local function purge_members(key, kind)
    for _, id in ipairs(index_ids(key, kind)) do
        local task_key = ARGV[2] .. id
        local lock = not Q.remove_queue_leaves_keys and redis.call("HGET", task_key, "unique_key")
        if lock and starts(lock, ARGV[4]) then
            redis.call("DEL", lock)
        end
        redis.call("DEL", task_key)
    end
end

local checked = Q.remove_queue_leaves_keys and 5 or #KEYS
for i = 1, checked do
    if not force and holds_tasks(i) then
        return refuse("QUEUE_NOT_EMPTY")
    end
end
if force and redis.call("LLEN", KEYS[2]) > 0 then
    return refuse("TASK_ACTIVE")
end

if Q.remove_queue_leaves_keys then
    for i = 1, 5 do
        purge_members(KEYS[i], index_kind(i))
    end
    for i = 1, 6 do
        redis.call("DEL", KEYS[i])
    end
    return ok()
end
for i = 1, 7 do
    purge_members(KEYS[i], index_kind(i))
end
for _, name in ipairs(redis.call("SMEMBERS", KEYS[8])) do
    purge_members(ARGV[3] .. name, "zset")
    redis.call("DEL", ARGV[3] .. name)
end
for _, set_key in ipairs(redis.call("ZRANGE", KEYS[9], 0, -1)) do
    if starts(set_key, ARGV[4]) then
        purge_members(set_key, "zset")
        redis.call("DEL", set_key)
    end
end
-- One DEL per 1000 keys (not per key): Lua's unpack() stops at 8000 values.
for i = 1, #KEYS, 1000 do
    redis.call("DEL", unpack(KEYS, i, math.min(i + 999, #KEYS)))
end
return ok()
