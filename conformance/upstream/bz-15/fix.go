package rdb

import "github.com/redis/go-redis/v9"

// archiveCmd removes the trimmed ids with ZREM of the unpacked id list, which
// fails beyond Lua's unpack limit (about 8000 values) after the script has
// already deleted the hashes and taken the task out of active and lease. This
// file replaces the script with one that removes each trimmed id by itself, so
// the trim cannot fail. Keys, arguments, return value and every other effect
// are unchanged.

func init() {
	// KEYS: task key, active, lease, archived, processed:<date>, failed:<date>,
	//       processed total, failed total, task key prefix.
	// ARGV: id, encoded message, now, cutoff, max archive size,
	//       stats expiration time, max int64.
	archiveCmd = redis.NewScript(`
local id, archived, task_prefix = ARGV[1], KEYS[4], KEYS[9]
if redis.call("LREM", KEYS[2], 0, id) == 0 then
	return redis.error_reply("NOT FOUND")
end
if redis.call("ZREM", KEYS[3], id) == 0 then
	return redis.error_reply("NOT FOUND")
end
redis.call("ZADD", archived, ARGV[3], id)

local function drop_archived(ids)
	for _, dropped in ipairs(ids) do
		redis.call("ZREM", archived, dropped)
		redis.call("DEL", task_prefix .. dropped)
	end
end
drop_archived(redis.call("ZRANGEBYSCORE", archived, "-inf", ARGV[4]))
drop_archived(redis.call("ZRANGE", archived, 0, -tonumber(ARGV[5])))

redis.call("HSET", KEYS[1], "msg", ARGV[2], "state", "archived")
for _, daily in ipairs({KEYS[5], KEYS[6]}) do
	if redis.call("INCR", daily) == 1 then
		redis.call("EXPIREAT", daily, ARGV[6])
	end
end
if tonumber(redis.call("GET", KEYS[7])) == tonumber(ARGV[7]) then
	redis.call("SET", KEYS[7], 1)
	redis.call("SET", KEYS[8], 1)
else
	redis.call("INCR", KEYS[7])
	redis.call("INCR", KEYS[8])
end
return redis.status_reply("OK")
`)
}
