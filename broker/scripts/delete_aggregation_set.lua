-- delete_aggregation_set: T23 — after the aggregated task was enqueued, its members go.
-- KEYS[1] aggregation set      asynq:{q}:g:<group>:<set_id>
-- KEYS[2] aggregation_sets     asynq:{q}:aggregation_sets
-- ARGV[1] task key prefix      asynq:{q}:t:  (task hashes are computed: prefix .. id)
-- ARGV[2] now_ms
-- Members' locks are read from their hashes' unique_key (not in KEYS).
-- Reply: {"OK"}
for _, id in ipairs(redis.call("ZRANGE", KEYS[1], 0, -1)) do
    if Q.locks_kept_until_ttl then
        redis.call("DEL", ARGV[1] .. id)  -- Asynq releases no lock
    else
        delete_task_hash(ARGV[1] .. id, id, ARGV[2])
    end
end
redis.call("DEL", KEYS[1])
if not Q.set_delete_keeps_index_entry then
    redis.call("ZREM", KEYS[2], KEYS[1])
end
return ok()
