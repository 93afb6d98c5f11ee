-- _prelude: prepended to every script by broker/scripting.py. Not a script of its own.
-- The loader puts `local Q = {<quirk> = true|false, ...}` above this text; scripts branch on
-- Q.<quirk> for the few lines where a variant deviates from the reference design.
--
-- Virtual time: TTL keys store PEXPIREAT (virtual deadline + TTL_SHIFT_MS) so that Redis never
-- expires them on its own clock; `expire_due` deletes a key whose virtual deadline passed.

local TTL_SHIFT_MS = 2000000000000
local MAX_INT64 = "9223372036854775807"

-- Delete `key` if its virtual deadline is <= now_ms (what Redis would have done on access).
local function expire_due(key, now_ms)
    local at = redis.call("PEXPIRETIME", key)
    if at > 0 and at - TTL_SHIFT_MS <= tonumber(now_ms) then
        redis.call("DEL", key)
    end
end

-- Give `key` a TTL ending at virtual time deadline_ms.
local function set_deadline(key, deadline_ms)
    redis.call("PEXPIREAT", key, tonumber(deadline_ms) + TTL_SHIFT_MS)
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
