-- A zombie task hash: still a hash without TTL whose id is in no index of its queue.
-- KEYS[1] the task hash; KEYS[2..8] pending, active, lease, scheduled, retry, archived,
-- completed; KEYS[9] aggregation_sets. ARGV[3] the task id, ARGV[4] the group key prefix
-- (asynq:{q}:g:).
local task, id = KEYS[1], ARGV[3]
local kind = kind_of(task)
if kind == 'none' then return {'gone', ''} end
if kind ~= 'hash' then return skip('it is a ' .. kind .. ' now') end
if redis.call('PTTL', task) ~= -1 then return skip('it has a TTL now') end
local indexes = {KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8]}
local group = redis.call('HGET', task, 'group')
if group and group ~= '' then table.insert(indexes, ARGV[4] .. group) end
local sets_kind = kind_of(KEYS[9])
if sets_kind == 'zset' then
  for _, set in ipairs(redis.call('ZRANGE', KEYS[9], 0, -1)) do table.insert(indexes, set) end
elseif sets_kind ~= 'none' then
  return skip(KEYS[9] .. ' is a ' .. sets_kind .. ': its sets cannot be checked')
end
local where = holder(indexes, id)
if where then return skip('its id is in ' .. where .. ' now') end
return delete(task)
