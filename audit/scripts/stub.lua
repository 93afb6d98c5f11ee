-- A stub task hash: still a hash that lacks msg or state. KEYS[1] the task hash.
local task = KEYS[1]
local kind = kind_of(task)
if kind == 'none' then return {'gone', ''} end
if kind ~= 'hash' then return skip('it is a ' .. kind .. ' now') end
if redis.call('HEXISTS', task, 'msg') == 1 and redis.call('HEXISTS', task, 'state') == 1 then
  return skip('it has msg and state now')
end
return delete(task)
