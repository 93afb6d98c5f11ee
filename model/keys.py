"""Asynq's Redis key schema: one function per key name (spec §1), shared by model and broker.

Every per-queue key carries the hash tag ``{queue}`` so that one queue's keys share a Redis
Cluster slot. Nothing else in the project spells a key name.

>>> task("default", "abc")
'asynq:{default}:t:abc'
>>> group_set("q", "g1", "5f0c")
'asynq:{q}:g:g1:5f0c'
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache

from model.states import INDEXED_STATES, TaskState

#: Global set of queue names (no hash tag; written outside per-queue scripts).
ALL_QUEUES = "asynq:queues"
#: Global registries (spec §1.5): zsets whose members are the names of per-process keys, scored
#: by expiry. Not modelled per queue; only a snapshot's ``extra`` mapping may carry them.
SERVERS = "asynq:servers"
WORKERS = "asynq:workers"
SCHEDULERS = "asynq:schedulers"
#: Every key Asynq writes starts with this.
NAMESPACE = "asynq:"


def server_info(process: str) -> str:
    """STRING ServerInfo of one server process ``<host>:<pid>:<serverID>`` (TTL 10 s); the
    members of :data:`SERVERS` are these names.

    >>> server_info("h:7:abc")
    'asynq:servers:{h:7:abc}'
    """
    return f"{SERVERS}:{{{process}}}"


def workers_of(process: str) -> str:
    """HASH worker id → WorkerInfo of one server process (TTL 10 s, absent without workers);
    the members of :data:`WORKERS` are these names."""
    return f"{WORKERS}:{{{process}}}"


def scheduler_entries(scheduler_id: str) -> str:
    """LIST of SchedulerEntry protobufs of one scheduler (TTL 2 × its heartbeat); the members of
    :data:`SCHEDULERS` are these names."""
    return f"{SCHEDULERS}:{{{scheduler_id}}}"


def scheduler_history(entry_id: str) -> str:
    """ZSET of enqueue events of one scheduler entry, scored by enqueue time (no TTL; BZ-19).

    >>> scheduler_history("5f0c")
    'asynq:scheduler_history:5f0c'
    """
    return f"{NAMESPACE}scheduler_history:{entry_id}"


#: Each registry and the function naming its members' keys.
REGISTRY_MEMBERS = {SERVERS: server_info, WORKERS: workers_of, SCHEDULERS: scheduler_entries}


def queue_prefix(queue: str) -> str:
    """``asynq:{<queue>}:`` — the prefix of every per-queue key."""
    return f"asynq:{{{queue}}}:"


@lru_cache(maxsize=256)
def queue_pattern(queue: str) -> str:
    """The SCAN MATCH pattern of every key of ``queue``.

    >>> print(queue_pattern("a*b"))
    asynq:{a\\*b}:*
    """
    return glob_escape(queue_prefix(queue)) + "*"


_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def glob_escape(text: str) -> str:
    """Escape ``text`` for a SCAN MATCH pattern."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def task_prefix(queue: str) -> str:
    """Prefix of task hashes; append an id to get :func:`task`."""
    return queue_prefix(queue) + "t:"


def task(queue: str, task_id: str) -> str:
    """The task hash ``asynq:{q}:t:<id>`` (fields msg, state, pending_since, unique_key, group, result)."""
    return task_prefix(queue) + task_id


def pending(queue: str) -> str:
    """LIST of pending ids; new ids are pushed at the head, dequeue pops the tail."""
    return queue_prefix(queue) + "pending"


def active(queue: str) -> str:
    """LIST of ids being processed."""
    return queue_prefix(queue) + "active"


def lease(queue: str) -> str:
    """ZSET id → lease expiry (Unix seconds) for every active id."""
    return queue_prefix(queue) + "lease"


def scheduled(queue: str) -> str:
    """ZSET id → process-at time."""
    return queue_prefix(queue) + "scheduled"


def retry(queue: str) -> str:
    """ZSET id → retry-at time."""
    return queue_prefix(queue) + "retry"


def archived(queue: str) -> str:
    """ZSET id → time of archiving."""
    return queue_prefix(queue) + "archived"


def completed(queue: str) -> str:
    """ZSET id → expiry (completion time + retention)."""
    return queue_prefix(queue) + "completed"


def paused(queue: str) -> str:
    """STRING holding the pause time; present while the queue is paused."""
    return queue_prefix(queue) + "paused"


def groups(queue: str) -> str:
    """SET of group names with a non-empty group zset."""
    return queue_prefix(queue) + "groups"


def group_prefix(queue: str) -> str:
    """Prefix of group zsets; append a group name to get :func:`group`."""
    return queue_prefix(queue) + "g:"


def group(queue: str, group_name: str) -> str:
    """ZSET id → time added, the tasks waiting in one group."""
    return group_prefix(queue) + group_name


def group_set(queue: str, group_name: str, set_id: str) -> str:
    """ZSET of ids staged for one aggregation (``g:<group>:<setID>``)."""
    return f"{group(queue, group_name)}:{set_id}"


def aggregation_sets(queue: str) -> str:
    """ZSET aggregation-set key → its deadline."""
    return queue_prefix(queue) + "aggregation_sets"


def unique_prefix(queue: str) -> str:
    """Prefix of unique-lock keys."""
    return queue_prefix(queue) + "unique:"


def unique(queue: str, task_type: str, payload: bytes | None) -> str:
    """STRING lock ``unique:<type>:<md5hex(payload)>`` holding the owner id; always has a TTL.

    A nil payload gives an empty checksum; an empty payload hashes to d41d8….
    """
    checksum = "" if payload is None else hashlib.md5(payload).hexdigest()
    return f"{unique_prefix(queue)}{task_type}:{checksum}"


def processed_total(queue: str) -> str:
    """STRING counter of processed tasks (no TTL)."""
    return queue_prefix(queue) + "processed"


def failed_total(queue: str) -> str:
    """STRING counter of failed tasks (no TTL)."""
    return queue_prefix(queue) + "failed"


def processed_daily(queue: str, date: str) -> str:
    """STRING counter of one UTC day (``YYYY-MM-DD``); TTL set at its first increment."""
    return f"{processed_total(queue)}:{date}"


def failed_daily(queue: str, date: str) -> str:
    """STRING counter of failures on one UTC day; TTL set at its first increment."""
    return f"{failed_total(queue)}:{date}"


def state_index(queue: str, state: TaskState) -> str:
    """The list or zset named after a state (one of ``INDEXED_STATES``).

    >>> state_index("q", TaskState.RETRY) == retry("q")
    True
    """
    if state not in INDEXED_STATES:
        raise ValueError(f"state {state.value!r} has no single index key")
    return queue_prefix(queue) + state.value


def validate_asynq_queue(value: object) -> str:
    """Return ``value`` if Asynq accepts it as a queue name (any string that is not blank: braces,
    colons and glob characters included), else raise ValueError. Names a live Redis may hold;
    the broker's own rule, :func:`validate_name`, is stricter.

    >>> validate_asynq_queue("a}:t:b{")
    'a}:t:b{'
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"queue must be a non-blank string, got {value!r}")
    return value


def queue_of(key: str) -> str | None:
    """The queue name inside a per-queue key's hash tag, or None for global keys."""
    if not key.startswith("asynq:{"):
        return None
    end = key.find("}:", 7)
    return key[7:end] if end >= 0 else None


#: Characters that may not appear in queue names or task ids because they would break the layout:
#: braces change the Cluster hash tag; whitespace and control characters are never intended.
FORBIDDEN_CHARS = frozenset("{}") | frozenset(chr(c) for c in range(0x20)) | {"\x7f"}


def validate_name(what: str, value: object) -> str:
    """Return ``value`` if it is a usable queue name, task id or group name, else raise ValueError.

    >>> validate_name("queue", "")
    Traceback (most recent call last):
    ...
    ValueError: queue must be a non-blank string, got ''
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a non-blank string, got {value!r}")
    if FORBIDDEN_CHARS.isdisjoint(value):
        return value
    bad = sorted({c for c in value if c in FORBIDDEN_CHARS})
    if bad:
        raise ValueError(f"{what} {value!r} contains characters that break the key layout: {bad!r}")
    return value
