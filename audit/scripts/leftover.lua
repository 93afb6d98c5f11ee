-- A leftover of a dead queue: the queue is still not in asynq:queues and still has no pending,
-- active, lease, scheduled or retry key. KEYS[1] the key, KEYS[2] asynq:queues, KEYS[3..7] the
-- queue's pending, active, lease, scheduled, retry; ARGV[3] the queue name.
local key = KEYS[1]
if kind_of(key) == 'none' then return {'gone', ''} end
local registry = kind_of(KEYS[2])
if registry == 'set' then
  if redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 1 then return skip('its queue is registered now') end
elseif registry ~= 'none' then
  return skip(KEYS[2] .. ' is a ' .. registry .. ': registration cannot be checked')
end
for i = 3, 7 do
  if redis.call('EXISTS', KEYS[i]) == 1 then return skip('its queue has ' .. KEYS[i] .. ' now') end
end
return delete(key)
