-- A daily counter without TTL: still a string, still no TTL. KEYS[1] the counter.
local counter = KEYS[1]
local kind = kind_of(counter)
if kind == 'none' then return {'gone', ''} end
if kind ~= 'string' then return skip('it is a ' .. kind .. ' now') end
if redis.call('PTTL', counter) ~= -1 then return skip('it has a TTL now') end
return delete(counter)
