package rdb

import "github.com/redis/go-redis/v9"

// The inspector's archive scripts trim the archive with ZREMRANGEBYSCORE and
// ZREMRANGEBYRANK, which drop the ids but keep their task hashes. This file
// replaces the four scripts with versions whose trim deletes each dropped id's
// hash as well (the server's Archive already does). Ids are removed one by one:
// ZREM with an unpacked list fails beyond Lua's unpack limit (about 8000).
// Keys, arguments and return values are unchanged.

// archiveTrimLua defines trim_archive(archived, task_prefix, cutoff, max_size):
// drop the entries scored at or before cutoff, then every entry beyond the
// newest max_size-1, deleting each dropped task's hash; and archive_all(ids),
// the bulk archive of the three ArchiveAll scripts (KEYS[1] the source, KEYS[2]
// archived; ARGV: now, cutoff, max size, task key prefix), which returns how
// many ids it archived.
const archiveTrimLua = `
local function drop_archived(archived, task_prefix, ids)
	for _, id in ipairs(ids) do
		redis.call("ZREM", archived, id)
		redis.call("DEL", task_prefix .. id)
	end
end
local function trim_archive(archived, task_prefix, cutoff, max_size)
	drop_archived(archived, task_prefix, redis.call("ZRANGEBYSCORE", archived, "-inf", cutoff))
	drop_archived(archived, task_prefix, redis.call("ZRANGE", archived, 0, -tonumber(max_size)))
end
local function archive_all(ids)
	for _, id in ipairs(ids) do
		redis.call("ZADD", KEYS[2], ARGV[1], id)
		redis.call("HSET", ARGV[4] .. id, "state", "archived")
	end
	trim_archive(KEYS[2], ARGV[4], ARGV[2], ARGV[3])
	redis.call("DEL", KEYS[1])
	return #ids
end
`

func init() {
	// KEYS: task key, archived, groups.
	// ARGV: id, now, cutoff, max size, queue key prefix, group key prefix.
	archiveTaskCmd = redis.NewScript(archiveTrimLua + `
local task_key, archived, groups = KEYS[1], KEYS[2], KEYS[3]
local id, now = ARGV[1], ARGV[2]
local queue_prefix, group_prefix = ARGV[5], ARGV[6]
if redis.call("EXISTS", task_key) == 0 then
	return 0
end
local fields = redis.call("HMGET", task_key, "state", "group")
local state, group = fields[1], fields[2]
if state == "active" then
	return -2
elseif state == "archived" then
	return -1
end
if state == "pending" then
	if redis.call("LREM", queue_prefix .. "pending", 1, id) == 0 then
		return redis.error_reply("task " .. id .. " is pending but not in " .. queue_prefix .. "pending")
	end
elseif state == "aggregating" then
	local group_key = group_prefix .. group
	if redis.call("ZREM", group_key, id) == 0 then
		return redis.error_reply("task " .. id .. " is aggregating but not in " .. group_key)
	end
	if redis.call("ZCARD", group_key) == 0 then
		redis.call("SREM", groups, group)
	end
else
	local index = queue_prefix .. state
	if redis.call("ZREM", index, id) == 0 then
		return redis.error_reply("task " .. id .. " is " .. state .. " but not in " .. index)
	end
end
redis.call("ZADD", archived, now, id)
redis.call("HSET", task_key, "state", "archived")
trim_archive(archived, queue_prefix .. "t:", ARGV[3], ARGV[4])
return 1
`)

	// KEYS: source zset (scheduled or retry), archived.
	// ARGV: now, cutoff, max size, task key prefix.
	archiveAllCmd = redis.NewScript(archiveTrimLua + `
return archive_all(redis.call("ZRANGE", KEYS[1], 0, -1))
`)

	// KEYS: pending list, archived.
	// ARGV: now, cutoff, max size, task key prefix.
	archiveAllPendingCmd = redis.NewScript(archiveTrimLua + `
return archive_all(redis.call("LRANGE", KEYS[1], 0, -1))
`)

	// KEYS: group zset, archived, groups.
	// ARGV: now, cutoff, max size, task key prefix, group name.
	archiveAllAggregatingCmd = redis.NewScript(archiveTrimLua + `
local n = archive_all(redis.call("ZRANGE", KEYS[1], 0, -1))
redis.call("SREM", KEYS[3], ARGV[5])
return n
`)
}
