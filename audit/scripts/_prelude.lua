-- Shared head of every guard of `keysim audit --apply` (audit/plan.py prepends it).
-- ARGV[1]: the run_id of the server the plan was made on; ARGV[2]: "1" for a dry run.
-- A guard re-checks, atomically, that its key is still the leak the audit found, then deletes
-- it (or, dry, says it would). Answer: {status, reason}, status one of
-- "deleted", "would delete", "skipped" (reason says what changed) or "gone".
local info = redis.call('INFO', 'server')
if not string.find(info, '\nrun_id:' .. ARGV[1] .. '\r', 1, true) then
  return redis.error_reply('keysim plan refused: made on the server with run_id ' .. ARGV[1] ..
                           ', not on this one')
end
local DRY = ARGV[2] == '1'

local function kind_of(key)
  return redis.call('TYPE', key)['ok']
end

-- Where id sits, or nil: an index of another type counts as holding it (it cannot be ruled out).
local function holder(keys_to_check, id)
  for _, key in ipairs(keys_to_check) do
    local kind = kind_of(key)
    if kind == 'zset' then
      if redis.call('ZSCORE', key, id) then return key end
    elseif kind == 'list' then
      if redis.call('LPOS', key, id) then return key end
    elseif kind ~= 'none' then
      return key
    end
  end
  return nil
end

local function delete(key)
  if DRY then return {'would delete', ''} end
  redis.call('UNLINK', key)
  return {'deleted', ''}
end

local function skip(reason)
  return {'skipped', reason}
end
