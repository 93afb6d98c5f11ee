-- A dangling index entry: the task hash still does not exist and the index still holds the id.
-- Removes the id from that index only (LREM / ZREM), never the index key.
-- KEYS[1] the index (list or zset), KEYS[2] the task hash; ARGV[3] the task id.
local index, id = KEYS[1], ARGV[3]
if redis.call('EXISTS', KEYS[2]) == 1 then return skip('its task hash exists now') end
local kind = kind_of(index)
local held
if kind == 'zset' then
  held = redis.call('ZSCORE', index, id)
elseif kind == 'list' then
  held = redis.call('LPOS', index, id)
elseif kind == 'none' then
  return {'gone', ''}
else
  return skip('the index is a ' .. kind .. ' now')
end
if not held then return {'gone', ''} end
if DRY then return {'would delete', ''} end
if kind == 'zset' then redis.call('ZREM', index, id) else redis.call('LREM', index, 0, id) end
return {'deleted', ''}
