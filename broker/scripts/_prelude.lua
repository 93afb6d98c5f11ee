-- _prelude: prepended to every script by broker/scripting.py. Not a script of its own.
-- The loader puts `local Q = {<quirk> = true|false, ...}` above this text; scripts branch on
-- Q.<quirk> for the few lines where a variant deviates from the reference design.
--
-- Virtual time: a TTL key stores PEXPIREAT encode_deadline(its virtual deadline) (_clock.lua),
-- so that Redis never expires it on its own clock; `expire_due` deletes a key whose virtual
-- deadline passed.

local MAX_INT64 = "9223372036854775807"

-- Delete `key` if its virtual deadline is <= now_ms (what Redis would have done on access).
local function expire_due(key, now_ms)
    local deadline = virtual_deadline(key)
    if deadline ~= nil and deadline <= tonumber(now_ms) then
        redis.call("DEL", key)
    end
end

-- Call fn(key) for every key SCAN finds matching `pattern` (`hint`: SCAN's COUNT); for the
-- scripts that look at a whole queue (its keys share the queue's hash-tagged prefix).
local function each_key(pattern, hint, fn)
    local cursor = "0"
    repeat
        local page = redis.call("SCAN", cursor, "MATCH", pattern, "COUNT", hint)
        cursor = page[1]
        for _, key in ipairs(page[2]) do
            fn(key)
        end
    until cursor == "0"
end

-- Give `key` a TTL ending at virtual time deadline_ms.
local function set_deadline(key, deadline_ms)
    redis.call("PEXPIREAT", key, encode_deadline(deadline_ms))
end

-- INCR a daily counter (TTL on its first increment) and its total (wraps to 1 at MaxInt64).
local function count(daily_key, total_key, now_ms, daily_deadline_ms)
    expire_due(daily_key, now_ms)
    if redis.call("INCR", daily_key) == 1 then
        set_deadline(daily_key, daily_deadline_ms)
    end
    if redis.call("GET", total_key) == MAX_INT64 then
        redis.call("SET", total_key, 1)
    else
        redis.call("INCR", total_key)
    end
end

-- Compare-and-delete: drop the lock `lock_key` only while `id` owns it.
local function release_lock(lock_key, id, now_ms)
    if lock_key == nil or lock_key == false or lock_key == "" then
        return
    end
    expire_due(lock_key, now_ms)
    if redis.call("GET", lock_key) == id then
        redis.call("DEL", lock_key)
    end
end

-- Release the lock named in a task hash's unique_key field, then delete the hash.
local function delete_task_hash(task_key, id, now_ms)
    release_lock(redis.call("HGET", task_key, "unique_key"), id, now_ms)
    redis.call("DEL", task_key)
end

-- Remove `id` from the archive; unless keep_hash, delete its hash (and release its lock).
local function drop_archived(archived_key, task_prefix, id, now_ms, keep_hash)
    redis.call("ZREM", archived_key, id)
    if not keep_hash then
        delete_task_hash(task_prefix .. id, id, now_ms)
    end
end

-- The archive trim (docs/reference-design.md): cutoff, then cap; never a new id unless the new
-- ids alone exceed the cap. `new` is a set-like table of ids added by the calling operation.
local function archive_trim(archived_key, task_prefix, new, cutoff_s, capacity, now_ms, keep_hash)
    local old = redis.call("ZRANGE", archived_key, "-inf", cutoff_s, "BYSCORE")
    for _, id in ipairs(old) do
        if not new[id] then
            drop_archived(archived_key, task_prefix, id, now_ms, keep_hash)
        end
    end
    local overflow = redis.call("ZCARD", archived_key) - tonumber(capacity)
    if overflow <= 0 then
        return
    end
    local new_count = 0
    for _ in pairs(new) do new_count = new_count + 1 end
    local window = redis.call("ZRANGE", archived_key, 0, overflow + new_count - 1)
    local later = {}
    for _, id in ipairs(window) do
        if overflow > 0 and not new[id] then
            drop_archived(archived_key, task_prefix, id, now_ms, keep_hash)
            overflow = overflow - 1
        elseif new[id] then
            table.insert(later, id)
        end
    end
    for _, id in ipairs(later) do
        if overflow <= 0 then break end
        drop_archived(archived_key, task_prefix, id, now_ms, keep_hash)
        overflow = overflow - 1
    end
end

-- Reply helpers: every script answers {status, ...}; Python maps status to an exception.
local function ok(...)
    return {"OK", ...}
end

local function refuse(status)
    return {status}
end

-- Inspector helpers (delete_task, archive_task, run_task and the bulk ops).

-- The ids of an index in index order: list order for pending, (score, id) for zsets.
local function index_ids(index_key, state)
    if state == "pending" then
        return redis.call("LRANGE", index_key, 0, -1)
    end
    return redis.call("ZRANGE", index_key, 0, -1)
end

-- The reply to a per-task op on a hash that names no index holding `id` (no state, a group task
-- without its group, a zombie, a task staged in an aggregation set): NOT_FOUND. Asynq
-- (inspector_errors_on_inconsistent_task) fails instead, before any write: a Lua error when the
-- state (or a group task's group) is missing, else an error reply.
local function inconsistent_task(id, state, group, source)
    if not Q.inspector_errors_on_inconsistent_task then
        return refuse("NOT_FOUND")
    end
    if not state then
        error("task " .. id .. ": its hash has no state field")
    end
    if state == "aggregating" and not group then
        error("task " .. id .. ": its hash has no group field")
    end
    return redis.error_reply("task " .. id .. " in state " .. state .. " is not in its index ("
        .. (source or "none") .. ")")
end

-- Locate task `id` for a per-task inspector op, writing nothing. `indexes` maps a state to its
-- index key; the group zset is group_prefix .. <hash's group>; `already` is the op's target
-- state (nil for delete). Returns state, source key, group; or nil and the reply the op returns
-- instead (a refusal, or an error reply: see inconsistent_task).
local function find_task(task_key, id, indexes, group_prefix, already)
    if redis.call("EXISTS", task_key) == 0 then
        return nil, refuse("NOT_FOUND")
    end
    local fields = redis.call("HMGET", task_key, "state", "group")
    local state, group = fields[1], fields[2]
    if state == "active" then
        return nil, refuse("TASK_ACTIVE")
    end
    if already ~= nil and state == already then
        return nil, refuse("ALREADY")
    end
    local source = indexes[state]
    if state == "aggregating" and group and group ~= "" then
        source = group_prefix .. group
    end
    if not source then
        return nil, inconsistent_task(id, state, group, source)
    end
    local found
    if state == "pending" then
        found = redis.call("LPOS", source, id)
    else
        found = redis.call("ZSCORE", source, id)
    end
    if not found then
        return nil, inconsistent_task(id, state, group, source)
    end
    return state, source, group
end

-- Take `id` out of the index find_task returned; SREM an emptied group from `groups`.
local function leave_source(state, source, id, groups_key, group)
    if state == "pending" then
        redis.call("LREM", source, 0, id)
        return
    end
    redis.call("ZREM", source, id)
    if state == "aggregating" and redis.call("ZCARD", source) == 0 then
        redis.call("SREM", groups_key, group)
    end
end

-- The trim after an inspector archive op. Asynq (inspector_archive_trim_keeps_hashes) trims by
-- score, then by rank down to `capacity`, new ids included, and keeps every trimmed hash; the
-- reference runs archive_trim.
local function inspector_trim(archived_key, task_prefix, new, cutoff_s, capacity, now_ms)
    if Q.inspector_archive_trim_keeps_hashes then
        redis.call("ZREMRANGEBYSCORE", archived_key, "-inf", cutoff_s)
        redis.call("ZREMRANGEBYRANK", archived_key, 0, -(tonumber(capacity) + 1))
        return
    end
    archive_trim(archived_key, task_prefix, new, cutoff_s, capacity, now_ms, false)
end

-- Client and server helpers (schedule, add_to_group, done, mark_as_complete, requeue, retry,
-- archive).

-- SET the unique lock `lock_key` to `id` with a virtual deadline unless another task holds it
-- (after lazy expiry). Returns false when the lock is held.
local function take_lock(lock_key, id, now_ms, deadline_ms)
    expire_due(lock_key, now_ms)
    if not redis.call("SET", lock_key, id, "NX") then
        return false
    end
    set_deadline(lock_key, deadline_ms)
    return true
end

-- Take `id` out of active and lease (T9–T16). Returns nil, or the refusal reply.
-- Reference: every guard before any write — in lease and hash exists are checked first, and
-- "in active" is the LREM's own answer, which comes before any write too.
-- Q.late_guards (Asynq): LREM, then ZREM, each NOT_FOUND on a miss (the ZREM one after the LREM
-- already happened); no hash check here — Asynq's done checks its own DEL.
local function leave_active(active_key, lease_key, task_key, id)
    if not Q.late_guards then
        if not redis.call("ZSCORE", lease_key, id) or redis.call("EXISTS", task_key) == 0 then
            return refuse("NOT_FOUND")
        end
    end
    if redis.call("LREM", active_key, 0, id) == 0 then
        return refuse("NOT_FOUND")
    end
    if redis.call("ZREM", lease_key, id) == 0 then
        return refuse("NOT_FOUND")
    end
    return nil
end
