-- write_result: T26 — ResultWriter.Write stores the task's result.
-- KEYS[1] task hash            asynq:{q}:t:<id>
-- ARGV[1] result bytes
-- Reply: {"OK"} | {"NOT_FOUND"}
if not Q.write_result_without_task and redis.call("EXISTS", KEYS[1]) == 0 then
    return refuse("NOT_FOUND")
end
-- Asynq HSETs regardless, re-creating a deleted task as a result-only hash.
redis.call("HSET", KEYS[1], "result", ARGV[1])
return ok()
