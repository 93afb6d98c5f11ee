"""Asynq's own per-queue memory figure, recomputed in Python from the same read commands.

Asynq (``memoryUsageCmd`` in ``internal/rdb/inspect.go``, spec/anchors §2.1) samples the first
20 ids of ``active`` and ``pending`` (LRANGE) and of ``scheduled``, ``retry``, ``archived`` and
``completed`` (ZRANGE), averages ``MEMORY USAGE`` of their task hashes, multiplies by the
structure's length and adds ``MEMORY USAGE`` of the structure itself; for groups it sums ZCARD of
every group in ``groups`` but samples only the first 5 groups (20 ids each). Hashes no index
references (zombies, stubs), locks, counters, ``lease`` and aggregation sets are never counted.
In v0.26.0 a sampled id whose hash is gone makes the script fail (BZ-21), reported here as
``crash``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from model import keys
from model.states import ZSET_STATES

TASK_SAMPLE_SIZE = 20
GROUP_SAMPLE_SIZE = 5


@dataclass(frozen=True)
class AsynqEstimate:
    """``bytes`` as Asynq would report it, or ``crash`` naming the dangling id that breaks it."""

    bytes: int | None
    crash: str | None = None


def _sample_bytes(client: redis.Redis, queue: str, ids: list[Any]) -> list[int | None]:
    pipe = client.pipeline(transaction=False)
    for task_id in ids:
        pipe.memory_usage(keys.task(queue, _text(task_id)))
    return list(pipe.execute())


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def asynq_estimate(client: redis.Redis, queue: str) -> AsynqEstimate:
    """What Asynq v0.26.0's ``Inspector.GetQueueInfo(queue).MemoryUsage`` would report."""
    total = 0.0
    structures = [(keys.active(queue), True), (keys.pending(queue), True)]
    structures += [(keys.state_index(queue, s), False) for s in ZSET_STATES]
    for key, is_list in structures:
        ids = (client.lrange(key, 0, TASK_SAMPLE_SIZE - 1) if is_list
               else client.zrange(key, 0, TASK_SAMPLE_SIZE - 1))
        if ids:
            sample = _sample_bytes(client, queue, ids)
            if None in sample:
                gone = _text(ids[sample.index(None)])
                return AsynqEstimate(None, f"MEMORY USAGE of {keys.task(queue, gone)} is nil "
                                           f"(dangling id in {key})")
            size = client.llen(key) if is_list else client.zcard(key)
            total += sum(b for b in sample if b is not None) / len(sample) * size
        total += client.memory_usage(key) or 0
    return _with_groups(client, queue, total)


def _with_groups(client: redis.Redis, queue: str, total: float) -> AsynqEstimate:
    groups = list(client.smembers(keys.groups(queue)))
    if not groups:
        return AsynqEstimate(int(total))
    count, sampled = 0, []
    for i, name in enumerate(groups):
        group_key = keys.group(queue, _text(name))
        count += int(client.zcard(group_key))
        if i < GROUP_SAMPLE_SIZE:
            ids = client.zrange(group_key, 0, TASK_SAMPLE_SIZE - 1)
            sample = _sample_bytes(client, queue, ids) if ids else []
            if None in sample:
                gone = _text(ids[sample.index(None)])
                return AsynqEstimate(None, f"MEMORY USAGE of {keys.task(queue, gone)} is nil "
                                           f"(dangling id in {group_key})")
            sampled += [b for b in sample if b is not None]
    if not sampled:  # Lua divides 0 by 0: nan, which Redis turns into a huge negative integer
        return AsynqEstimate(None, "every sampled group is empty (0/0 in the script)")
    return AsynqEstimate(int(total + sum(sampled) / len(sampled) * count))

