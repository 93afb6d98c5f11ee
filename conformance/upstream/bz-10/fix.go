package rdb

import "github.com/redis/go-redis/v9"

// ReclaimStaleAggregationSets moves a stale set's tasks back into their group
// but does not list the group in the queue's groups set, which the aggregator
// reads. This file replaces the script with one that also adds the group's
// name to that set (the key is named from the aggregation_sets key, as the
// group keys are named from the set keys). Keys, arguments and return value
// are unchanged.

func init() {
	// KEYS: aggregation_sets ("asynq:{<qname>}:aggregation_sets").
	// ARGV: now.
	reclaimStateAggregationSetsCmd = redis.NewScript(`
local queue_prefix = string.sub(KEYS[1], 1, -string.len("aggregation_sets") - 1)
local group_prefix = queue_prefix .. "g:"
local groups_key = queue_prefix .. "groups"
for _, set_key in ipairs(redis.call("ZRANGEBYSCORE", KEYS[1], "-inf", ARGV[1])) do
	-- set key = <group key>:<set id>; the set id (a UUID) has no colon
	local group_key = string.match(set_key, "^(.*):[^:]*$")
	local members = redis.call("ZRANGE", set_key, 0, -1, "WITHSCORES")
	for i = 1, #members, 2 do
		redis.call("ZADD", group_key, members[i + 1], members[i])
	end
	if #members > 0 then
		redis.call("SADD", groups_key, string.sub(group_key, string.len(group_prefix) + 1))
	end
	redis.call("DEL", set_key)
end
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", ARGV[1])
return redis.status_reply("OK")
`)
}
