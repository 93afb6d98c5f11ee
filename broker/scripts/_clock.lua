-- _clock: the virtual time base, read by broker/scripting.py with the prelude (its definitions
-- are drawn in where a script uses them). Not a script of its own, and not an Asynq operation:
-- the environment's clock, as the snapshot and sweep scripts are (so it is not mutated).
--
-- A TTL key's virtual deadline d is stored as PEXPIREAT encode_deadline(d), far beyond any real
-- clock (docs/reference-design.md "Time", docs/servers.md). TTL_SHIFT_MS, TTL_SCALE and
-- TTL_CENTRE are defined by the loader (broker/scripting.py, the one place they are spelled);
-- encode_deadline and decode_deadline are the Lua twins of the functions of the same names there.

-- The expiry time that stores virtual deadline `deadline_ms`.
local function encode_deadline(deadline_ms)
    return TTL_SHIFT_MS + TTL_SCALE * tonumber(deadline_ms) + TTL_CENTRE
end

-- The virtual deadline stored in expiry time `at`; exact for a reading of `at` up to 2 ms
-- early or 1 ms late (the scale and centre absorb it).
local function decode_deadline(at)
    return math.floor((at - TTL_SHIFT_MS - TTL_CENTRE + TTL_SCALE / 2) / TTL_SCALE)
end

-- Whether this server lacks PEXPIRETIME (Redis 6.2, or renamed away): found on first use.
local pexpiretime_missing = false

-- Milliseconds of a TIME reply.
local function time_ms(reply)
    return tonumber(reply[1]) * 1000 + math.floor(tonumber(reply[2]) / 1000)
end

-- The expiry time of `key` in ms, or nil without a TTL (or key): PEXPIRETIME, else TIME + PTTL.
-- A script's clock is not frozen on Redis 6.2, so TIME is read before and after PTTL and the
-- read repeats until both fall within 1 ms: the sum is then at most 1 ms early.
local function expiry_at(key)
    if not pexpiretime_missing then
        local at = redis.pcall("PEXPIRETIME", key)
        if type(at) == "number" then
            if at < 0 then return nil end
            return at
        end
        pexpiretime_missing = true
    end
    if redis.call("PTTL", key) < 0 then
        return nil
    end
    while true do
        local before = time_ms(redis.call("TIME"))
        local left = redis.call("PTTL", key)
        if time_ms(redis.call("TIME")) - before <= 1 then
            return before + left
        end
    end
end

-- The virtual deadline of `key`, or nil without a TTL.
local function virtual_deadline(key)
    local at = expiry_at(key)
    if at == nil then
        return nil
    end
    return decode_deadline(at)
end
