package rdb

import "github.com/redis/go-redis/v9"

// RemoveQueue's scripts delete the pending, active, scheduled, retry and archived
// tasks and those five indexes plus the lease, but nothing else of the queue:
// completed tasks, aggregating groups and staged aggregation sets (with their
// task hashes), the groups and aggregation_sets registries, the paused flag and
// the stats counters survive the removal, and the Inspector cannot reach them
// afterwards. This file replaces both scripts with versions that delete every
// key of the queue. Keys, arguments and return values are unchanged; the other
// keys are named from the task key prefix (ARGV[1], "asynq:{<qname>}:t:"), as
// the existing scripts already name task hashes.

// removeQueueLua defines the helpers both scripts share. Daily counters
// (processed:<date>, failed:<date>) are named by date; the script deletes those
// of the last 92 days up to tomorrow by Redis' clock, which covers their 90-day
// TTL (a counter written by a client whose clock is off by more than a day is
// left to expire).
const removeQueueLua = `
local task_prefix = ARGV[1]
local queue_prefix = string.sub(task_prefix, 1, -3)
local groups_key = queue_prefix .. "groups"
local sets_key = queue_prefix .. "aggregation_sets"
local completed_key = queue_prefix .. "completed"

-- The keys of the aggregating tasks: each registered group and each staged set.
local function aggregating_keys()
	local keys = {}
	for _, group in ipairs(redis.call("SMEMBERS", groups_key)) do
		table.insert(keys, queue_prefix .. "g:" .. group)
	end
	for _, set_key in ipairs(redis.call("ZRANGE", sets_key, 0, -1)) do
		table.insert(keys, set_key)
	end
	return keys
end

-- Deletes a task's hash and the unique lock it still owns.
local function delete_task(id)
	local task_key = task_prefix .. id
	local lock = redis.call("HGET", task_key, "unique_key")
	if lock and lock ~= "" and redis.call("GET", lock) == id then
		redis.call("DEL", lock)
	end
	redis.call("DEL", task_key)
end

local function delete_index(key, ids)
	for _, id in ipairs(ids) do
		delete_task(id)
	end
	redis.call("DEL", key)
end

-- "YYYY-MM-DD" of a day counted from 1970-01-01 (proleptic Gregorian calendar).
local function civil_date(day)
	local z = day + 719468
	local era = math.floor(z / 146097)
	local doe = z - era * 146097
	local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
	local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
	local mp = math.floor((5 * doy + 2) / 153)
	local d = doy - math.floor((153 * mp + 2) / 5) + 1
	local m = mp < 10 and mp + 3 or mp - 9
	local y = yoe + era * 400 + (m <= 2 and 1 or 0)
	return string.format("%04d-%02d-%02d", y, m, d)
end

local function delete_queue_metadata()
	redis.call("DEL", groups_key, sets_key, queue_prefix .. "paused",
		queue_prefix .. "processed", queue_prefix .. "failed")
	local today = math.floor(tonumber(redis.call("TIME")[1]) / 86400)
	for day = today - 92, today + 1 do
		local date = civil_date(day)
		redis.call("DEL", queue_prefix .. "processed:" .. date, queue_prefix .. "failed:" .. date)
	end
end
`

func init() {
	// KEYS: pending, active, scheduled, retry, archived, lease.
	// ARGV: task key prefix.
	// Returns 1 when removed, -2 (nothing deleted) when tasks are active.
	removeQueueForceCmd = redis.NewScript(removeQueueLua + `
if redis.call("LLEN", KEYS[2]) > 0 then
	return -2
end
delete_index(KEYS[1], redis.call("LRANGE", KEYS[1], 0, -1))
for i = 3, 5 do
	delete_index(KEYS[i], redis.call("ZRANGE", KEYS[i], 0, -1))
end
delete_index(completed_key, redis.call("ZRANGE", completed_key, 0, -1))
for _, key in ipairs(aggregating_keys()) do
	delete_index(key, redis.call("ZRANGE", key, 0, -1))
end
redis.call("DEL", KEYS[2], KEYS[6])
delete_queue_metadata()
return 1
`)

	// KEYS: pending, active, scheduled, retry, archived, lease.
	// ARGV: task key prefix.
	// Returns 1 when removed, -1 (nothing deleted) when the queue holds a task in
	// a state QueueInfo.Size counts (pending, active, scheduled, retry, archived,
	// aggregating). Completed tasks are deleted with the queue.
	removeQueueCmd = redis.NewScript(removeQueueLua + `
local size = redis.call("LLEN", KEYS[1]) + redis.call("LLEN", KEYS[2])
for i = 3, 5 do
	size = size + redis.call("ZCARD", KEYS[i])
end
for _, key in ipairs(aggregating_keys()) do
	size = size + redis.call("ZCARD", key)
end
if size > 0 then
	return -1
end
delete_index(completed_key, redis.call("ZRANGE", completed_key, 0, -1))
for _, key in ipairs(KEYS) do
	redis.call("DEL", key)
end
for _, key in ipairs(aggregating_keys()) do
	redis.call("DEL", key)
end
delete_queue_metadata()
return 1
`)
}
