package rdb

import "github.com/redis/go-redis/v9"

// The unique scripts take the uniqueness lock (SET NX) before they check that
// the TaskID is free, so a call refused with ErrTaskIdConflict keeps a lock it
// does not own a task for. This file replaces the three scripts with versions
// that check both before writing anything: the lock first (as before, so a
// call that meets both conditions still reports a duplicate), then the id, then
// take the lock, which cannot fail at that point because a script runs
// atomically. Keys, arguments and return values are unchanged.
//
// Each script starts from the same checks:
//   lock held -> -1, id taken -> 0, else take the lock and go on.

func uniqueEnqueueLua(lockKey, lockOwner, lockTTL, taskKey, body string) string {
	return `
if redis.call("EXISTS", ` + lockKey + `) == 1 then
	return -1
end
if redis.call("EXISTS", ` + taskKey + `) == 1 then
	return 0
end
redis.call("SET", ` + lockKey + `, ` + lockOwner + `, "EX", ` + lockTTL + `)
` + body
}

func init() {
	// KEYS: lock, task key, pending. ARGV: id, lock TTL, message, now (ns).
	enqueueUniqueCmd = redis.NewScript(uniqueEnqueueLua("KEYS[1]", "ARGV[1]", "ARGV[2]", "KEYS[2]", `
redis.call("HSET", KEYS[2], "msg", ARGV[3], "state", "pending", "pending_since", ARGV[4], "unique_key", KEYS[1])
redis.call("LPUSH", KEYS[3], ARGV[1])
return 1
`))

	// KEYS: lock, task key, scheduled. ARGV: id, lock TTL, process_at, message.
	scheduleUniqueCmd = redis.NewScript(uniqueEnqueueLua("KEYS[1]", "ARGV[1]", "ARGV[2]", "KEYS[2]", `
redis.call("HSET", KEYS[2], "msg", ARGV[4], "state", "scheduled", "unique_key", KEYS[1])
redis.call("ZADD", KEYS[3], ARGV[3], ARGV[1])
return 1
`))

	// KEYS: task key, group, groups, lock. ARGV: message, id, now, group name, lock TTL.
	addToGroupUniqueCmd = redis.NewScript(uniqueEnqueueLua("KEYS[4]", "ARGV[2]", "ARGV[5]", "KEYS[1]", `
redis.call("HSET", KEYS[1], "msg", ARGV[1], "state", "aggregating", "group", ARGV[4])
redis.call("ZADD", KEYS[2], ARGV[3], ARGV[2])
redis.call("SADD", KEYS[3], ARGV[4])
return 1
`))
}
