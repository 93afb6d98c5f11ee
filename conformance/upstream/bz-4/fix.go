package rdb

import "github.com/redis/go-redis/v9"

// Unique locks are released with their task. Two scripts lose them:
//   - deleteAllPendingCmd deletes pending tasks without releasing the locks
//     they own;
//   - addToGroupUniqueCmd takes the lock but does not record it on the task
//     (no unique_key field), so no later script can release it; and the group
//     deletions (deleteAllAggregatingCmd, deleteAggregationSetCmd) never look.
// This file replaces the four scripts. Keys, arguments and return values are
// unchanged. Tasks added to a group before the fix have no unique_key field;
// their locks still expire by TTL.

// releaseLockLua defines delete_task(task_key, id): deletes the task's hash and
// the unique lock recorded on it, if the task still owns it.
const releaseLockLua = `
local function delete_task(task_key, id)
	local lock = redis.call("HGET", task_key, "unique_key")
	if lock and lock ~= "" and redis.call("GET", lock) == id then
		redis.call("DEL", lock)
	end
	redis.call("DEL", task_key)
end
`

func init() {
	// KEYS: pending list. ARGV: task key prefix.
	deleteAllPendingCmd = redis.NewScript(releaseLockLua + `
local ids = redis.call("LRANGE", KEYS[1], 0, -1)
for _, id in ipairs(ids) do
	delete_task(ARGV[1] .. id, id)
end
redis.call("DEL", KEYS[1])
return #ids
`)

	// KEYS: group zset, groups. ARGV: task key prefix, group name.
	deleteAllAggregatingCmd = redis.NewScript(releaseLockLua + `
local ids = redis.call("ZRANGE", KEYS[1], 0, -1)
for _, id in ipairs(ids) do
	delete_task(ARGV[1] .. id, id)
end
redis.call("SREM", KEYS[2], ARGV[2])
redis.call("DEL", KEYS[1])
return #ids
`)

	// KEYS: aggregation set, aggregation_sets. ARGV: task key prefix.
	deleteAggregationSetCmd = redis.NewScript(releaseLockLua + `
for _, id in ipairs(redis.call("ZRANGE", KEYS[1], 0, -1)) do
	delete_task(ARGV[1] .. id, id)
end
redis.call("DEL", KEYS[1])
redis.call("ZREM", KEYS[2], KEYS[1])
return redis.status_reply("OK")
`)

	// KEYS: task key, group zset, groups, unique lock.
	// ARGV: encoded message, id, now, group name, lock TTL in seconds.
	// Returns 1 when added, 0 on an id conflict, -1 when the lock is held.
	// Records the lock on the task as unique_key, as the other unique scripts do.
	addToGroupUniqueCmd = redis.NewScript(`
if not redis.call("SET", KEYS[4], ARGV[2], "NX", "EX", ARGV[5]) then
	return -1
end
if redis.call("EXISTS", KEYS[1]) == 1 then
	return 0
end
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "aggregating", "group", ARGV[4], "unique_key", KEYS[4])
redis.call("ZADD", KEYS[2], ARGV[3], ARGV[2])
redis.call("SADD", KEYS[3], ARGV[4])
return 1
`)
}
