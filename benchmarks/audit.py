"""Benchmark of ``keysim audit``: 1,000,000 task keys on a private real Redis.

``python -m benchmarks.audit [--tasks N] [--reads auto|script|pipeline] [--user default|readonly]``
starts a Redis (broker.servers), seeds N task hashes with pipelines (98% pending and indexed, 1%
archived and indexed, 1% zombies: archived hashes in no index), then audits in a fresh child
process and prints the audit's wall time, keys per second, the child's peak RSS (so seeding
memory is not counted), its CPU time and the server's, and how task hashes were read
(``reads``: one EVAL_RO per batch, or the pipeline a read-only ACL user without ``+eval_ro``
gets). ``--user readonly`` audits as a user made with the audit's minimal ACL recipe
(``+@read`` and connection basics: no MULTI/EXEC, no EVAL_RO), so task hashes come from the
pipeline and every candidate is confirmed by two plain re-reads with a pause between. Not part
of the test run.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import redis

from broker.codec import encode_message
from broker.servers import start_server
from model import keys
from model.message import TaskMessage

QUEUE = "default"
BATCH = 10_000


def seed(url: str, tasks: int) -> int:
    """Write ``tasks`` task hashes; return how many are zombies."""
    r = redis.Redis.from_url(url)
    r.flushdb()
    r.sadd(keys.ALL_QUEUES, QUEUE)
    zombies = 0
    for start in range(0, tasks, BATCH):
        pipe = r.pipeline(transaction=False)
        pending: list[str] = []
        for n in range(start, min(start + BATCH, tasks)):
            task_id = f"{n:08d}-5f0c-4b8e-9a0e-{n:012x}"
            body = encode_message(TaskMessage(type="email:send", payload=b'{"to":"x@example.com"}',
                                              id=task_id, queue=QUEUE))
            kind = n % 100
            state = "archived" if kind >= 98 else "pending"
            pipe.hset(keys.task(QUEUE, task_id), mapping={"msg": body, "state": state})
            if kind == 99:
                zombies += 1  # archived hash trimmed out of the index (BZ-1/2/16)
            elif kind == 98:
                pipe.zadd(keys.archived(QUEUE), {task_id: 1_700_000_000 + n})
            else:
                pending.append(task_id)
        if pending:
            pipe.lpush(keys.pending(QUEUE), *pending)
        pipe.execute()
    r.close()
    return zombies


def _server_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])


def readonly_user(url: str) -> str:
    """Create the audit's minimal ACL user (audit.acl) on ``url``'s server; its URL."""
    from audit.acl import rules

    r = redis.Redis.from_url(url)
    r.execute_command("ACL", "SETUSER", "bench-audit", "reset", "on", ">bench",  # type: ignore[no-untyped-call]
                      *rules().split())
    r.close()
    return url.replace("redis://", "redis://bench-audit:bench@", 1)


def measure(url: str, reads: str) -> None:
    """Child process: audit ``url`` and print JSON figures."""
    from audit import AuditOptions, audit, connect

    plain = redis.Redis.from_url(url)  # INFO for the figures only; the audit has its own client
    server_before = _server_cpu(plain)
    client = connect(url)
    cpu_before = time.process_time()
    started = time.monotonic()
    result = audit(client, AuditOptions(scan_count=1000, chunk=1000, reads=reads))
    seconds = time.monotonic() - started
    client_cpu = time.process_time() - cpu_before
    (report,) = result.queues
    print(json.dumps({"seconds": round(seconds, 2), "keys_per_s": round(report.keys / seconds),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "client_cpu_s": round(client_cpu, 2),
                      "server_cpu_s": round(_server_cpu(plain) - server_before, 2),
                      "reads": result.reads, "keys": report.keys, "findings": len(result.findings),
                      "consistency": result.capabilities.consistency,
                      "leaked_bytes": report.leaked_bytes, "exact_bytes": report.bytes,
                      "asynq_estimate": report.asynq.bytes if report.asynq else None}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.audit", description=__doc__)
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--reads", choices=("auto", "script", "pipeline"), default="auto",
                        help="how the audit reads task hashes (default: auto)")
    parser.add_argument("--user", choices=("default", "readonly"), default="default",
                        help="audit as the default user or as the minimal +@read user (default: default)")
    parser.add_argument("--measure", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        measure(args.measure, args.reads)
        return 0
    if args.tasks < 1:
        parser.error(f"--tasks must be >= 1, got {args.tasks}")
    with start_server() as server:
        started = time.monotonic()
        zombies = seed(server.url, args.tasks)
        print(f"seeded {args.tasks} task hashes ({zombies} zombies) in {time.monotonic() - started:.1f} s")
        url = readonly_user(server.url) if args.user == "readonly" else server.url
        out = subprocess.run([sys.executable, "-m", "benchmarks.audit", "--measure", url,
                              "--reads", args.reads], check=True, capture_output=True, text=True).stdout
        figures = json.loads(out)
        print(f"audit: {figures['seconds']} s wall ({figures['keys_per_s']} keys/s), peak client RSS "
              f"{figures['peak_rss_mb']} MB, {figures['keys']} keys, {figures['findings']} findings")
        print(f"cpu: client {figures['client_cpu_s']} s, server {figures['server_cpu_s']} s; "
              f"task hashes read by {figures['reads']}; user {args.user}, candidates confirmed by "
              f"{figures['consistency']}")
        print(f"bytes: exact {figures['exact_bytes']}, leaked {figures['leaked_bytes']}, "
              f"Asynq's sampled figure {figures['asynq_estimate']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
