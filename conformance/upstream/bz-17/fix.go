package rdb

import "github.com/redis/go-redis/v9"

// Dequeue and ForwardIfReady trust every id of their index and write the new
// state into the task hash with HSET, which creates a stub hash ({state} only,
// no message) when the task is gone. Dequeue then leases the stub and reports
// an empty queue; the stub stays in active and lease for good. This file
// replaces both scripts with versions that drop an id without a task message
// from its index, leave the key alone and go on with the next id. Keys,
// arguments and return values are unchanged (forward's count still counts
// every id it took off the delayed zset, so its caller's loop ends as before).

func init() {
	// KEYS: pending, paused, active, lease.
	// ARGV: lease expiration, task key prefix.
	// Returns the encoded message of the dequeued task, or nil.
	dequeueCmd = redis.NewScript(`
if redis.call("EXISTS", KEYS[2]) == 1 then
	return nil
end
while true do
	local id = redis.call("RPOP", KEYS[1])
	if not id then
		return nil
	end
	local task_key = ARGV[2] .. id
	local msg = redis.call("HGET", task_key, "msg")
	if msg then
		redis.call("LPUSH", KEYS[3], id)
		redis.call("HSET", task_key, "state", "active")
		redis.call("HDEL", task_key, "pending_since")
		redis.call("ZADD", KEYS[4], ARGV[1], id)
		return msg
	end
end
`)

	// KEYS: scheduled or retry zset, pending.
	// ARGV: now (s), task key prefix, now (ns), group key prefix.
	// Returns the number of ids taken off the zset (at most 100 per call).
	forwardCmd = redis.NewScript(`
local ids = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, 100)
for _, id in ipairs(ids) do
	local task_key = ARGV[2] .. id
	redis.call("ZREM", KEYS[1], id)
	local fields = redis.call("HMGET", task_key, "msg", "group")
	local msg, group = fields[1], fields[2]
	if not msg then
		-- no task behind the id: nothing to forward
	elseif group and group ~= "" then
		redis.call("ZADD", ARGV[4] .. group, ARGV[1], id)
		redis.call("HSET", task_key, "state", "aggregating")
	else
		redis.call("LPUSH", KEYS[2], id)
		redis.call("HSET", task_key, "state", "pending", "pending_since", ARGV[3])
	end
end
return #ids
`)
}
