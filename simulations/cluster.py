"""Simulations on a Redis Cluster: one independent simulation per shard, run side by side.

A workload spec is run once per shard (master), in a process of its own, with every queue
renamed so that its ``{queue}`` hash tag falls in a slot of that master (:func:`shard_spec`:
``default`` becomes e.g. ``default@s1.4``). Each process has its own cluster client: its
scripts all go to its own master, and only the registration of its queues (``SADD
asynq:queues``, before each enqueue, as Asynq's client does) goes to the master that serves
``asynq:queues``. The shards share nothing else, so their results are simply merged: script
calls/s of the cluster = all shards' script calls / the longest shard's wall time (the shards
start together, at a barrier, once connected).

Bytes are the estimator's (as on fakeredis): ``MEMORY USAGE`` and ``INFO`` figures are one
server's, and eviction (``redis.maxmemory``) is refused, as on fakeredis.

>>> from simulations.spec import spec_from_dict
>>> spec = spec_from_dict({"name": "x", "queues": [{"name": "a"}, {"name": "b"}]})
>>> renamed = shard_spec(spec, lambda q: q.endswith("@s1.0") or q.endswith("@s1.2"), 1)
>>> [q.name for q in renamed.queues], renamed.servers[0].queues
(['a@s1.0', 'b@s1.0'], ('a@s1.0', 'b@s1.0'))
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from redis.cluster import RedisCluster
from redis.crc import key_slot

from model import keys
from simulations.engine import BackendUnsupported, Engine, ListSink, SampleSink
from simulations.output import RunDir, summarize
from simulations.spec import WorkloadSpec

#: How long a shard's process may take to connect before the others give up waiting.
START_TIMEOUT_S = 60.0
_NAME_ATTEMPTS = 10_000


@dataclass(frozen=True)
class ShardResult:
    """One shard's run: its master, queues, counters and how long it took."""

    shard: int
    master: str
    queues: tuple[str, ...]
    script_calls: int
    processed: int
    wall_s: float
    cpu_s: float
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def calls_per_s(self) -> float:
        return self.script_calls / self.wall_s if self.wall_s else 0.0


@dataclass(frozen=True)
class ClusterRun:
    """The merged result of one run over ``len(shards)`` shards."""

    shards: tuple[ShardResult, ...]

    @property
    def script_calls(self) -> int:
        return sum(s.script_calls for s in self.shards)

    @property
    def wall_s(self) -> float:
        return max(s.wall_s for s in self.shards)

    @property
    def calls_per_s(self) -> float:
        """Script calls/s of the whole cluster (all shards' calls over the longest wall time)."""
        return self.script_calls / self.wall_s if self.wall_s else 0.0

    @property
    def per_shard(self) -> float:
        return self.calls_per_s / len(self.shards)


def masters_of(client: RedisCluster) -> list[str]:
    """The masters' names (host:port), ordered by their first slot."""
    firsts: dict[str, int] = {}
    for slot in sorted(client.nodes_manager.slots_cache):
        firsts.setdefault(client.nodes_manager.get_node_from_slot(slot).name, slot)
    return sorted(firsts, key=firsts.__getitem__)


def on_master(client: RedisCluster, master: str) -> Callable[[str], bool]:
    """Whether a queue's keys live on ``master``."""
    def test(queue: str) -> bool:
        slot = key_slot(keys.pending(queue).encode("utf-8", "surrogateescape"))
        return bool(client.nodes_manager.get_node_from_slot(slot).name == master)
    return test


def shard_spec(spec: WorkloadSpec, fits: Callable[[str], bool], shard: int) -> WorkloadSpec:
    """``spec`` with each queue ``q`` renamed ``q@s<shard>.<n>``, the first ``n`` whose name
    ``fits`` (its keys live on the shard's master); servers and actions follow the names."""
    names: dict[str, str] = {}
    for q in spec.queues:
        for n in range(_NAME_ATTEMPTS):
            name = f"{q.name}@s{shard}.{n}"
            if fits(name):
                names[q.name] = name
                break
        else:
            raise ValueError(f"no name for queue {q.name!r} on shard {shard} "
                             f"in {_NAME_ATTEMPTS} attempts")
    return replace(
        spec,
        queues=tuple(replace(q, name=names[q.name]) for q in spec.queues),
        servers=tuple(replace(s, queues=tuple(names[n] for n in s.queues)) for s in spec.servers),
        actions=tuple(replace(a, queue=names.get(a.queue, a.queue)) for a in spec.actions))


def run_shards(url: str, spec: WorkloadSpec, shards: int, out: Path | None = None,
               source: str | None = None, meta: dict[str, Any] | None = None) -> ClusterRun:
    """Run ``spec`` on the first ``shards`` masters of the cluster at ``url`` at once, one
    process each (module docstring); with ``out``, shard ``i`` writes its run directory
    ``out/shard-<i>`` (samples, summary; no plots)."""
    client = RedisCluster.from_url(url)
    try:
        masters = masters_of(client)
        if not 1 <= shards <= len(masters):
            raise ValueError(f"shards must be in 1..{len(masters)} (the cluster's masters), "
                             f"got {shards}")
        specs = [shard_spec(spec, on_master(client, m), i) for i, m in enumerate(masters[:shards])]
    finally:
        client.close()
    context = multiprocessing.get_context("fork")
    start = context.Barrier(shards, timeout=START_TIMEOUT_S)
    answers = context.SimpleQueue()
    procs = [context.Process(target=_shard_process, name=f"shard-{i}", args=(
        answers, start, url, specs[i], i, masters[i], out, source, meta or {}))
        for i in range(shards)]
    for proc in procs:
        proc.start()
    try:
        replies = [answers.get() for _ in procs]
    finally:
        for proc in procs:
            proc.join()
    failed = [r for r in replies if isinstance(r, str)]
    if failed:
        raise RuntimeError("a shard failed: " + "; ".join(failed))
    return ClusterRun(tuple(sorted(replies, key=lambda r: r.shard)))


def _shard_process(answers: Any, start: Any, *args: Any) -> None:
    """A shard's process: its :class:`ShardResult`, or why it failed, on ``answers``."""
    try:
        answers.put(_run_shard(*args, start=start))
    except BaseException as err:  # the parent must hear of it, or wait for ever
        start.abort()
        answers.put(f"shard {args[2]}: {type(err).__name__}: {err}")


def _run_shard(url: str, spec: WorkloadSpec, shard: int, master: str, out: Path | None,
               source: str | None, meta: dict[str, Any], *, start: Any) -> ShardResult:
    """One shard's simulation, in its own process."""
    client = RedisCluster.from_url(url)
    sink: SampleSink = ListSink()
    run_dir = None
    if out is not None:
        run_dir = out / f"shard-{shard}"
        sink = RunDir(run_dir, spec, source, {**meta, "shard": shard, "master": master})
    try:
        engine = Engine(spec, client, real=False, sink=sink)
        start.wait()
        cpu0, began = _cpu_s(), time.perf_counter()
        counts = engine.run()
        wall, cpu = time.perf_counter() - began, _cpu_s() - cpu0
    finally:
        if isinstance(sink, RunDir):
            sink.close()
        client.close()
    if run_dir is not None:
        summarize(run_dir)
    return ShardResult(shard, master, tuple(q.name for q in spec.queues),
                       engine.batch.script_calls, counts.get("processed", 0), wall, cpu,
                       dict(engine.errors))


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def report_lines(run: ClusterRun) -> list[str]:
    """The run's throughput, merged and per shard."""
    lines = [f"{len(run.shards)} shard(s): {run.calls_per_s:,.0f} script calls/s "
             f"({run.per_shard:,.0f} per shard; {run.script_calls:,} calls in {run.wall_s:.1f} s)"]
    for s in run.shards:
        errors = f", errors {s.errors}" if s.errors else ""
        lines.append(f"  shard {s.shard} on {s.master} ({', '.join(s.queues)}): "
                     f"{s.calls_per_s:,.0f} calls/s, {s.processed:,} tasks processed, "
                     f"client CPU {s.cpu_s:.1f} s of {s.wall_s:.1f} s{errors}")
    return lines


def simulate_cluster(name_or_path: str, shard_counts: Sequence[int], *, variant: str | None = None,
                     duration: int | None = None, out: Path | None = None, seed: int | None = None,
                     scale: str = "full") -> tuple[Path, list[ClusterRun]]:
    """``keysim simulate … --backend cluster``: the spec on a private cluster of
    ``max(shard_counts)`` masters, once per shard count (emptied before each); shard ``i`` of
    the run on ``n`` shards writes ``out/shards-<n>/shard-<i>``. Returns ``out`` and the runs."""
    from broker.cluster import start_cluster
    from simulations.run import default_out, load

    if not shard_counts or min(shard_counts) < 1:
        raise ValueError(f"shard counts must be >= 1, got {list(shard_counts)}")
    spec, source = load(name_or_path, scale, variant=variant, duration=duration, seed=seed)
    if spec.redis.maxmemory:
        raise BackendUnsupported(f"spec {spec.name!r} sets redis.maxmemory (eviction): on a "
                                 "cluster the simulator estimates bytes and sets no server "
                                 "limit; run it with --backend redis")
    out = out if out is not None else default_out(spec, "cluster")
    runs = []
    with start_cluster(max(shard_counts)) as cluster:
        client = cluster.client()
        try:
            meta = {"spec": spec.name, "variant": spec.variant, "backend": "cluster",
                    "server": f"{cluster.kind} {cluster.version}", "scale": scale,
                    "finding": spec.finding}
            for count in shard_counts:
                client.flushdb()
                runs.append(run_shards(cluster.url, spec, count, out / f"shards-{count}", source,
                                       {**meta, "shards": count}))
        finally:
            client.flushdb()
            client.close()
    return out, runs


def cores() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0))
