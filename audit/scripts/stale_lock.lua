-- A stale unique lock: still holds the same owner id, and that owner's hash is absent, completed
-- or names another lock. KEYS[1] the lock, KEYS[2] the owner's task hash; ARGV[3] the owner id.
local lock = KEYS[1]
local kind = kind_of(lock)
if kind == 'none' then return {'gone', ''} end
if kind ~= 'string' then return skip('it is a ' .. kind .. ' now') end
if redis.call('GET', lock) ~= ARGV[3] then return skip('another task holds it now') end
local owner_kind = kind_of(KEYS[2])
if owner_kind == 'none' then return delete(lock) end
if owner_kind ~= 'hash' then return skip('its owner key is a ' .. owner_kind .. ' now') end
local fields = redis.call('HMGET', KEYS[2], 'state', 'unique_key')
if fields[1] == 'completed' or fields[2] ~= lock then return delete(lock) end
return skip('its owner exists and holds it now')
