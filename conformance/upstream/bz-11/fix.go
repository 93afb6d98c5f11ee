package rdb

import "github.com/redis/go-redis/v9"

// ForwardIfReady moves a due task that has a group back into that group but
// does not list the group in the queue's groups set, which the aggregator
// reads. This file replaces the forward script with one that also adds the
// group's name to that set (named from the group key prefix ARGV[4],
// "asynq:{<qname>}:g:"). Keys, arguments and return value are unchanged.

func init() {
	// KEYS: scheduled or retry zset, pending.
	// ARGV: now (s), task key prefix, now (ns), group key prefix.
	// Returns the number of ids taken off the zset (at most 100 per call).
	forwardCmd = redis.NewScript(`
local groups_key = string.sub(ARGV[4], 1, -3) .. "groups"
local ids = redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1], "LIMIT", 0, 100)
for _, id in ipairs(ids) do
	local task_key = ARGV[2] .. id
	local group = redis.call("HGET", task_key, "group")
	redis.call("ZREM", KEYS[1], id)
	if group and group ~= "" then
		redis.call("ZADD", ARGV[4] .. group, ARGV[1], id)
		redis.call("SADD", groups_key, group)
		redis.call("HSET", task_key, "state", "aggregating")
	else
		redis.call("LPUSH", KEYS[2], id)
		redis.call("HSET", task_key, "state", "pending", "pending_since", ARGV[3])
	end
end
return #ids
`)
}
