-- A unique lock without TTL: still the same value, still no TTL. KEYS[1] the lock; ARGV[3] its
-- value at audit time.
local lock = KEYS[1]
local kind = kind_of(lock)
if kind == 'none' then return {'gone', ''} end
if kind ~= 'string' then return skip('it is a ' .. kind .. ' now') end
if redis.call('GET', lock) ~= ARGV[3] then return skip('its value changed') end
if redis.call('PTTL', lock) ~= -1 then return skip('it has a TTL now') end
return delete(lock)
