-- archive: T16 — retries exhausted (or SkipRetry): the task is archived, then the archive trimmed.
-- KEYS[1] active list          asynq:{q}:active
-- KEYS[2] lease zset           asynq:{q}:lease
-- KEYS[3] archived zset        asynq:{q}:archived
-- KEYS[4] task hash            asynq:{q}:t:<id>
-- KEYS[5] processed daily      asynq:{q}:processed:<date>
-- KEYS[6] processed total      asynq:{q}:processed
-- KEYS[7] failed daily         asynq:{q}:failed:<date>
-- KEYS[8] failed total         asynq:{q}:failed
-- ARGV[1] task id
-- ARGV[2] msg (encoded TaskMessage: error, last_failed_at; retried unchanged)
-- ARGV[3] now_s (the score)
-- ARGV[4] cutoff (now_s - archive_cutoff): older entries are trimmed
-- ARGV[5] capacity (entries kept by the cap)
-- ARGV[6] task key prefix      asynq:{q}:t:  (trimmed ids' hashes are computed: prefix .. id)
-- ARGV[7] now_ms
-- ARGV[8] daily counter deadline in virtual ms
-- Trimmed ids' locks are read from their hashes' unique_key (not in KEYS).
-- Reply: {"OK"} | {"NOT_FOUND"}; an Asynq variant may fail part-way (Lua error, BZ-15)

-- Redis' Lua 5.1 refuses unpack() of 8000 or more values ("too many results to unpack").
local UNPACK_LIMIT = 8000

-- A trimmed id's hash: Q.archive_trim_keeps_hashes keeps it; Asynq (Q.locks_kept_until_ttl) DELs
-- it without releasing its lock.
local function drop_hash(prefix, id, now_ms)
    if Q.archive_trim_keeps_hashes then
        return
    end
    if Q.locks_kept_until_ttl then
        redis.call("DEL", prefix .. id)
    else
        delete_task_hash(prefix .. id, id, now_ms)
    end
end

-- Asynq (Q.archive_cutoff_unpack_overflow): DEL every hash, then one ZREM of unpack(ids), which
-- fails at 8000 ids with the hashes already gone. fakeredis' Lua bridge already fails at 7996
-- arguments, so the limit is raised explicitly at Redis' threshold and the ZREM itself is sent
-- in chunks.
local function remove_all(archived, prefix, ids, now_ms)
    for _, id in ipairs(ids) do
        drop_hash(prefix, id, now_ms)
    end
    if #ids >= UNPACK_LIMIT then
        error("too many results to unpack")
    end
    for i = 1, #ids, 1000 do
        redis.call("ZREM", archived, unpack(ids, i, math.min(i + 999, #ids)))
    end
end

local function remove_each(archived, prefix, ids, now_ms)
    for _, id in ipairs(ids) do
        redis.call("ZREM", archived, id)
        drop_hash(prefix, id, now_ms)
    end
end

local function trim(archived, prefix, id, cutoff, capacity, now_ms)
    local new = {[id] = true}
    if not Q.archive_cutoff_unpack_overflow and not Q.archive_cap_trims_new_entry then
        archive_trim(archived, prefix, new, cutoff, capacity, now_ms, Q.archive_trim_keeps_hashes)
        return
    end
    local remove = Q.archive_cutoff_unpack_overflow and remove_all or remove_each
    -- The cutoff step; the new id (score now) is never this old.
    remove(archived, prefix, redis.call("ZRANGE", archived, "-inf", cutoff, "BYSCORE"), now_ms)
    if Q.archive_cap_trims_new_entry then
        -- Asynq's cap by rank: keep the `capacity` highest ranks, the new id not excepted; the
        -- HSET below then re-creates a trimmed new id's hash (a zombie).
        local extra = redis.call("ZRANGE", archived, 0, -(tonumber(capacity) + 1))
        remove(archived, prefix, extra, now_ms)
    else
        archive_trim(archived, prefix, new, cutoff, capacity, now_ms, Q.archive_trim_keeps_hashes)
    end
end

local refused = leave_active(KEYS[1], KEYS[2], KEYS[4], ARGV[1])
if refused then
    return refused
end
redis.call("ZADD", KEYS[3], ARGV[3], ARGV[1])
trim(KEYS[3], ARGV[6], ARGV[1], ARGV[4], ARGV[5], ARGV[7])
redis.call("HSET", KEYS[4], "msg", ARGV[2], "state", "archived")
count(KEYS[5], KEYS[6], ARGV[7], ARGV[8])
count(KEYS[7], KEYS[8], ARGV[7], ARGV[8])
return ok()
