"""``AsynqGoBroker``: the key protocol applied by **real Asynq** — its own Go ``rdb.RDB`` — through
the conformance driver (``conformance/driver``, built by ``conformance/build.sh``).

It offers the same methods as :class:`broker.Broker` (:class:`model.api.KeyProtocol`), so the
differential test and the stateful machine can drive it like any broker. Every call sends one
JSON line to the driver process, which sets Asynq's simulated clock to the shared
:class:`~model.clock.VirtualClock` and calls the matching ``RDB`` method on a real Redis.

Time normalisation (see ``conformance/README.md``): Asynq writes TTLs on the real clock, our
brokers as ``PEXPIREAT(encode_deadline(virtual deadline))`` (``broker.scripting``). Around every
call this broker runs one small script over the queue's STRING keys (the only keys that carry
TTLs) that

* rewrites a real-clock TTL (a unique lock's ``SET NX EX``) as the encoded virtual deadline
  ``now_ms + ttl`` (the TTL rounded up to whole seconds, as Asynq always sets it),
* encodes the daily counters' ``EXPIREAT(now + 90 days)``, which the driver shifted by
  ``TTL_SHIFT_MS`` before it reached Redis (a real-clock timestamp in the virtual past would
  delete the key at once), and
* deletes every key whose virtual deadline passed (what ``BrokerBase.expire_due`` does).

The composites (recover, reclaim, forward, janitor) run as one pass of **Asynq's own server
components** (``conformance/components``; ``components=False``: our Python composites over
single ``RDB`` calls), and :meth:`AsynqGoBroker.aggregate`, :meth:`~AsynqGoBroker.process` and
:meth:`~AsynqGoBroker.sync` run Asynq's aggregator, processor finish path and syncer.

It tells a value it wrote from one the driver shifted by reading it exactly (PEXPIRETIME), so
it needs Redis >= 7.0 (or Valkey): on an older server the constructor raises
``ServerUnavailable``.

On a Redis Cluster (a ``redis+cluster://host:port`` URL, any node) the driver runs Asynq on
go-redis's ``ClusterClient`` and this broker works through ``redis.cluster.RedisCluster``: the
normalising script and the snapshot go out on its :class:`~broker.cluster_wire.ClusterWire`,
routed by the queue's slot (its ``asynq:{q}:`` prefix is their one KEY), the snapshot's
``SISMEMBER asynq:queues`` by that key's own slot. Neither the driver nor the wire follows a
redirection: a misrouted command (CROSSSLOT, MOVED, ASK, …) raises
:class:`~broker.cluster_wire.ClusterRoutingError`.

>>> AsynqGoBroker.variant_for("v0.24.0")
'asynq-v0.24.0'
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import threading
import uuid
import weakref
from dataclasses import replace
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import redis
from redis.cluster import RedisCluster

from broker.base import BrokerBase
from broker.cluster_wire import ClusterRoutingError
from broker.processor import recover_expired
from broker.scripting import with_prelude
from broker.servers import PEXPIRETIME_VERSION, check_version
from model import keys, validation
from model.clock import VirtualClock
from model.endings import Ending
from model.errors import ERROR_FOR, KeysimError, ScriptError
from model.message import TaskMessage
from model.policy import DAY, Policy
from model.states import TaskState
from model.transitions import Outcome

#: Where the driver sources, build script and binaries live.
CONFORMANCE_DIR = Path(__file__).resolve().parent.parent / "conformance"
BUILD_SCRIPT = CONFORMANCE_DIR / "build.sh"
DEFAULT_VERSION = "v0.26.0"
#: How to enable the Go-backed tests, for skip reasons and errors.
HOW_TO_ENABLE = "install Go >= 1.22 and run conformance/build.sh"

#: Asynq's hard-coded constants (internal/rdb): a policy for AsynqGoBroker must agree with them.
_FIXED_BY_ASYNQ = {"lease_duration": 30, "max_archive_size": 10_000, "archive_cutoff_days": 90,
                   "archive_keeps_one_less": True, "stats_ttl": 90 * DAY,
                   "aggregation_timeout": 120, "recover_skew": 30}
_FIXED_BATCH_BEFORE_V025 = 100
#: How a URL names a Redis Cluster (by any node; database 0, a cluster's only one), for this
#: module and the driver alike.
CLUSTER_SCHEME = "redis+cluster"

# One pass over the queue's STRING keys (locks, counters, paused), with the prelude's encoding:
# a TTL on the real clock (below TTL_SHIFT_MS: a unique lock's SET NX EX, whole seconds) becomes
# the virtual deadline now + TTL; a daily counter's EXPIREAT, which the driver moved to
# TTL_SHIFT_MS + its virtual deadline (whole seconds, so never a value encode_deadline writes),
# is encoded; a key whose virtual deadline has passed is deleted. KEYS[1]: the queue's prefix
# asynq:{q}: (no key has that name: it routes the call to the queue's slot on a cluster; the
# keys are found by SCAN there). ARGV: [1] SCAN pattern of the queue, [2] now_ms.
_NORMALISE_LUA = with_prelude("""
local now = tonumber(ARGV[2])
local cursor, deleted = "0", 0
repeat
    local reply = redis.call("SCAN", cursor, "MATCH", ARGV[1], "COUNT", 1000, "TYPE", "string")
    cursor = reply[1]
    for _, key in ipairs(reply[2]) do
        local at = expiry_at(key)
        if at ~= nil then
            local deadline = decode_deadline(at)
            if at < TTL_SHIFT_MS then
                deadline = now + math.ceil(redis.call("PTTL", key) / 1000) * 1000
            elseif encode_deadline(deadline) ~= at then
                deadline = at - TTL_SHIFT_MS
            end
            if deadline <= now then
                redis.call("DEL", key)
                deleted = deleted + 1
            elseif encode_deadline(deadline) ~= at then
                redis.call("PEXPIREAT", key, encode_deadline(deadline))
            end
        end
    end
until cursor == "0"
return deleted
""")


class DriverUnavailable(RuntimeError):
    """The Go driver cannot be built or started (no Go, no module proxy, a build error)."""


class DriverError(RuntimeError):
    """The driver answered a request it could not understand (a bug on our side), or died."""


class UnsupportedOperation(DriverError):
    """The Asynq release has no such operation (task groups before v0.23.0): see
    :meth:`AsynqGoBroker.lacks`, which tells beforehand."""


#: The operations that exist only with task groups (Asynq v0.23.0 and later).
GROUP_OPERATIONS = frozenset({"add_to_group", "add_to_group_unique", "aggregation_check",
                              "read_aggregation_set", "delete_aggregation_set",
                              "reclaim_stale_aggregation_sets"})


def build_driver(version: str = DEFAULT_VERSION) -> Path:
    """Build (or reuse) the driver for Asynq ``version``; return the binary's path.

    Raises :class:`DriverUnavailable` with the reason (and how to fix it) when Go is missing or
    the build fails. Cached: an unchanged version + source hash returns at once.
    """
    _check_version(version)
    if shutil.which("go") is None:
        raise DriverUnavailable(f"Go not found: {HOW_TO_ENABLE}")
    done = subprocess.run(["bash", str(BUILD_SCRIPT), version], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise DriverUnavailable(f"conformance/build.sh {version} failed "
                                f"(exit {done.returncode}):\n{done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def _check_version(version: object) -> str:
    """A release (``v0.26.0``) or a Go pseudo-version of a commit after one
    (``v0.26.1-0.20260514123454-785bb7208cb0``)."""
    if not isinstance(version, str) or not re.fullmatch(r"v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?",
                                                        version):
        raise ValueError(f"version must look like 'v0.26.0', got {version!r}")
    return version


class DriverProcess:
    """One running driver: JSON lines in, JSON lines out. Stopped by :meth:`close` (or GC)."""

    def __init__(self, binary: Path, url: str) -> None:
        self._proc = subprocess.Popen([str(binary), url], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, bufsize=1)
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _stop, self._proc)

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """Send one request and return the decoded answer."""
        line = json.dumps(request, separators=(",", ":"))
        with self._lock:
            stdin, stdout = self._pipes()
            try:
                stdin.write(line + "\n")
                stdin.flush()
                answer = stdout.readline()
            except OSError as err:
                raise DriverError(f"driver died: {err}; {self._stderr()}") from err
        if not answer:
            raise DriverError(f"driver exited (code {self._proc.poll()}): {self._stderr()}")
        reply: dict[str, Any] = json.loads(answer)
        return reply

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        return self._proc.stdin, self._proc.stdout

    def _stderr(self) -> str:
        """The end of the driver's error output, once it has exited (its stdout just closed,
        so it is on its way out: give it a moment)."""
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return ""
        return "" if self._proc.stderr is None else self._proc.stderr.read()[-1000:]

    def close(self) -> None:
        """Stop the driver (idempotent)."""
        self._finalizer()


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text)


class AsynqGoBroker(BrokerBase):
    """Real Asynq (its Go ``rdb.RDB``) behind the :class:`~model.api.KeyProtocol` methods.

    ``AsynqGoBroker(url, version="v0.26.0", policy=None, clock=None)``: ``url`` names the Redis
    database Asynq writes to (``redis://host:port/db``), or a Redis Cluster by any of its nodes
    (``redis+cluster://host:port``, see :func:`client_for`); the driver is built on first use. The
    policy defaults to the matching variant's (Asynq's defaults); its fields that Asynq
    hard-codes (lease, archive size and cutoff, stats TTL, aggregation timeout) must keep
    Asynq's values. ``snapshot``, ``queues`` and the codec come from :class:`BrokerBase`.
    Use it as a context manager, or call :meth:`close`. For example (needs Go and a real
    Redis, so it is shown here and run by tests/test_conformance.py instead)::

        with AsynqGoBroker("redis://127.0.0.1:6379/3") as b:
            b.enqueue(TaskMessage(type="t", payload=b"x", id="t1", queue="q"))
            assert b.dequeue("q").id == "t1"
    """

    def __init__(self, url: str, version: str = DEFAULT_VERSION, policy: Policy | None = None,
                 clock: VirtualClock | None = None, components: bool = True) -> None:
        client = client_for(url)  # refuses a bad URL before anything starts
        self.version = _check_version(version)
        validation.check_bool("components", components)
        #: Run the composites (recover, forward, janitor, reclaim) through Asynq's own
        #: components (``conformance/components``); False: our Python composites over the
        #: driver's single ``RDB`` calls (``broker.processor``).
        self.components = components
        #: What the last component op logged (Asynq reports a failed write only there).
        self.component_log: list[str] = []
        super().__init__(client, self.variant_for(version), policy, clock)
        _check_policy(self.policy, version)
        # The time normalisation reads exact deadlines (a cluster: its seed node's version).
        check_version(url.replace(f"{CLUSTER_SCHEME}://", "redis://", 1), PEXPIRETIME_VERSION)
        self.url = url
        self._driver = DriverProcess(build_driver(version), url)
        self._check_alive()
        #: What the release has, as the driver built for it reports (``{"groups": bool,
        #: "components": bool}``).
        self.features: dict[str, bool] = dict(self._send("features", None))
        # A release without the components the shim drives (before v0.23.0) runs our Python
        # composites over its single RDB calls.
        self.components = components and self.features.get("components", False)

    @staticmethod
    def variant_for(version: str) -> str:
        """Our variant nearest to Asynq ``version``: ``asynq-v0.24.0`` before v0.25.0 (the
        server archive trim still leaks, BZ-1), ``asynq-v0.26.0`` from it.

        >>> AsynqGoBroker.variant_for("v0.25.1")
        'asynq-v0.26.0'
        """
        return "asynq-v0.24.0" if _version_tuple(_check_version(version)) < (0, 25, 0) \
            else "asynq-v0.26.0"

    def lacks(self, operation: str, args: tuple[Any, ...] = ()) -> bool:
        """True when this release has no ``operation`` for these arguments (a group operation,
        a bulk operation on a group, or a message with a group, before v0.23.0): the stateful
        machine does not run it."""
        if self.features.get("groups", True):
            return False
        grouped = any(isinstance(a, TaskMessage) and a.group_key for a in args)
        return operation in GROUP_OPERATIONS or TaskState.AGGREGATING in args or grouped

    def __enter__(self) -> AsynqGoBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the driver and close the Redis connection."""
        self._driver.close()
        self.client.close()

    def begin_run(self, clock: VirtualClock, policy: Policy) -> AsynqGoBroker:
        """Start an independent run on this broker (one driver serves many): :meth:`reset`,
        then read time from ``clock`` and defaults from ``policy`` (checked as in the
        constructor). Returns the broker."""
        _check_policy(policy, self.version)
        self.reset()
        self.clock, self.policy = clock, policy
        return self

    def reset(self) -> None:
        """FLUSHDB this broker's database (on a cluster, every primary's) and give the driver a
        fresh ``RDB`` (an empty ``queuesPublished`` cache), so one driver can serve many
        independent runs."""
        self.client.flushdb()
        self._send("reset", None)

    def _check_alive(self) -> None:
        if self._send("ping", None) != "pong":
            raise DriverError("driver did not answer ping")

    # --- the call path ----------------------------------------------------------------------
    def _send(self, op: str, queue: str | None, **fields: Any) -> Any:
        """One driver call: expire, call, normalise TTLs; raise the outcome's KeysimError."""
        if queue is not None:
            self.expire_due(queue)
        request = {"op": op, "now": self.clock.now_ns, **fields}
        if queue is not None:
            request["queue"] = queue
        reply = self._driver.call(request)
        if queue is not None:
            self.expire_due(queue)
        if reply["ok"]:
            return reply["result"]
        kind, text = reply["kind"], reply.get("error", "")
        if kind == "script_error":
            raise ScriptError(f"{op}: {text}")
        if kind == "bad_request":
            raise DriverError(f"{op}: driver refused the request: {text}")
        if kind == "misrouted":
            raise ClusterRoutingError(f"{op}: Asynq's call was misrouted: {text}")
        if kind == "unsupported":
            raise UnsupportedOperation(f"Asynq {self.version}: {text}")
        raise ERROR_FOR[Outcome(kind)](f"{op}: {text}")

    def _component(self, op: str, queue: str, args: dict[str, Any] | None = None,
                   **fields: Any) -> Any:
        """One pass of one of Asynq's components (a ``component_*`` driver op); keeps its log
        in :attr:`component_log` and returns the answer (``count``, ``extra``)."""
        reply = self._send(op, queue, args=args or {}, **fields)
        self.component_log = list(reply.get("log") or [])
        return reply

    def _send_msg(self, op: str, msg: TaskMessage, **fields: Any) -> Any:
        encoded = _b64(self.encode(msg))  # may raise on bad field values: before any write
        return self._send(op, msg.queue, msg=encoded, **fields)

    def expire_due(self, queue: str) -> int:
        """Delete the queue's TTL keys whose virtual deadline passed (and move any real-clock
        TTL Asynq just set onto the virtual clock); return how many keys were deleted."""
        validation.check_queue(queue)
        # EVAL, not EVALSHA: Redis caches the script, and no NOSCRIPT retry is needed on any node.
        return int(self._command("EVAL", _NORMALISE_LUA, 1, keys.queue_prefix(queue),
                                 keys.queue_pattern(queue), self.now_ms))

    # --- client (T1–T6) ---------------------------------------------------------------------
    def enqueue(self, msg: TaskMessage) -> None:
        """T1 via ``RDB.Enqueue``."""
        self._send_msg("enqueue", self.check_message(msg))

    def enqueue_unique(self, msg: TaskMessage, ttl: int) -> None:
        """T2 via ``RDB.EnqueueUnique``; msg.unique_key is filled in as Asynq's client does."""
        self.check_message(msg)
        self.check_ttl(ttl)
        self._send_msg("enqueue_unique", _with_lock(msg), ttl=ttl)

    def schedule(self, msg: TaskMessage, process_at: int) -> None:
        """T3 via ``RDB.Schedule``."""
        self._check_schedule(msg, process_at)
        self._send_msg("schedule", msg, process_at=process_at)

    def schedule_unique(self, msg: TaskMessage, process_at: int, ttl: int) -> None:
        """T4 via ``RDB.ScheduleUnique``."""
        self._check_schedule(msg, process_at)
        self.check_ttl(ttl)
        self._send_msg("schedule_unique", _with_lock(msg), process_at=process_at, ttl=ttl)

    def add_to_group(self, msg: TaskMessage, group: str) -> None:
        """T5 via ``RDB.AddToGroup`` (msg.group_key set to ``group``, as the client does)."""
        self.check_message(msg)
        self.check_group(group)
        self._send_msg("add_to_group", replace(msg, group_key=group), group=group)

    def add_to_group_unique(self, msg: TaskMessage, group: str, ttl: int) -> None:
        """T6 via ``RDB.AddToGroupUnique``."""
        self.check_message(msg)
        self.check_group(group)
        self.check_ttl(ttl)
        self._send_msg("add_to_group_unique", _with_lock(replace(msg, group_key=group)),
                       group=group, ttl=ttl)

    def _check_schedule(self, msg: TaskMessage, process_at: int) -> None:
        self.check_message(msg)
        validation.check_int("process_at", process_at)

    # --- processor (T8–T16) -----------------------------------------------------------------
    def dequeue(self, queue: str) -> TaskMessage | None:
        """T8 via ``RDB.Dequeue(queue)``; None for ``ErrNoProcessableTask``."""
        data = self._send("dequeue", validation.check_queue(queue))
        return None if data is None else self.decode(_unb64(data))

    def done(self, msg: TaskMessage) -> None:
        """T9/T10 via ``RDB.Done``."""
        self._send_msg("done", self.check_message(msg))

    def mark_as_complete(self, msg: TaskMessage) -> None:
        """T11/T12 via ``RDB.MarkAsComplete`` (which sets CompletedAt itself)."""
        self._send_msg("mark_as_complete", self.check_message(msg))

    def requeue(self, msg: TaskMessage) -> None:
        """T13 via ``RDB.Requeue``."""
        self._send_msg("requeue", self.check_message(msg))

    def retry(self, msg: TaskMessage, retry_at: int, error: str, is_failure: bool = True) -> None:
        """T14/T15 via ``RDB.Retry`` (which updates retried, error and last_failed_at itself)."""
        self.check_message(msg)
        validation.check_int("retry_at", retry_at)
        validation.check_text("error", error)
        validation.check_bool("is_failure", is_failure)
        self._send_msg("retry", msg, retry_at=retry_at, error=error, is_failure=is_failure)

    def archive(self, msg: TaskMessage, error: str) -> None:
        """T16 via ``RDB.Archive``."""
        self.check_message(msg)
        validation.check_text("error", error)
        self._send_msg("archive", msg, error=error)

    # --- forwarder, janitor, recoverer (T17–T20) ----------------------------------------------
    def forward_if_ready(self, queue: str) -> int:
        """T17: one pass of Asynq's forwarder (``exec``, which calls ``RDB.ForwardIfReady``),
        or that call alone without :attr:`components`; the count is what was due before."""
        validation.check_queue(queue)
        if self.components:
            return int(self._component("component_forward", queue)["count"])
        return int(self._send("forward_if_ready", queue))

    def delete_expired_completed_tasks(self, queue: str) -> int:
        """T25: one pass of Asynq's janitor (``exec``: ``RDB.DeleteExpiredCompletedTasks``,
        batch ``policy.janitor_batch_size``), or that call alone; the count is what was due."""
        validation.check_queue(queue)
        batch = self.policy.janitor_batch_size
        if self.components:
            return int(self._component("component_janitor", queue, batch=batch)["count"])
        return int(self._send("delete_expired_completed_tasks", queue, batch=batch))

    def delete_expired_archived_tasks(self, queue: str) -> int:
        """Asynq has no archive janitor: nothing happens, 0 is returned."""
        validation.check_queue(queue)
        return 0

    def list_lease_expired(self, queue: str, cutoff: int) -> list[TaskMessage]:
        """T18 via ``RDB.ListLeaseExpired``."""
        validation.check_int("cutoff", cutoff)
        data = self._send("list_lease_expired", validation.check_queue(queue), cutoff=cutoff)
        return [self.decode(_unb64(d)) for d in data]

    def recover(self, queue: str) -> int:
        """T19. With :attr:`components`: Asynq's recoverer, one ``recoverLeaseExpiredTasks``
        pass (its retry delays from the policy); the count is how many ``Retry``/``Archive``
        calls succeeded. Without: our composite (``broker.processor.recover_expired``) over
        ``ListLeaseExpired(now - recover_skew)``, ``Archive`` (retries used up) or ``Retry``
        per message, a task moved meanwhile (NOT FOUND) or a script failing part-way skipped."""
        if self.components:
            validation.check_queue(queue)
            args = {"part": "leases", "delays": self._retry_delays(queue)}
            return int(self._component("component_recover", queue, args)["count"])
        expired = self.list_lease_expired(queue, self.now_s - self.policy.recover_skew)
        # Before v0.25.0 a lease id without a hash comes back as a zero-value message (BZ-7);
        # Asynq's Archive of it answers NOT FOUND and the recoverer moves on: skip it here.
        expired = [msg for msg in expired if msg.queue]
        return recover_expired(self, expired)

    def extend_lease(self, queue: str, *task_ids: str) -> int:
        """T20 via ``RDB.ExtendLease``; the count is how many ids had a lease before."""
        validation.check_queue(queue)
        for task_id in task_ids:
            validation.check_task_id(task_id)
        return int(self._send("extend_lease", queue, ids=list(task_ids)))

    # --- aggregator (T21–T24) -----------------------------------------------------------------
    def aggregation_check(self, queue: str, group: str, set_id: str | None = None) -> str | None:
        """T21 via ``RDB.AggregationCheck``. Asynq names sets with a random UUID; ``set_id``
        must be one (``str(uuid.uuid4())``, a new one when None) and Asynq is made to pick it."""
        validation.check_queue(queue)
        self.check_group(group)
        set_id = str(uuid.uuid4()) if set_id is None else _check_uuid4(set_id)
        p = self.policy
        result = self._send("aggregation_check", queue, group=group, set_id=set_id,
                            grace=p.aggregation_grace, max_delay=p.aggregation_max_delay,
                            max_size=p.aggregation_max_size)
        return None if result is None else str(result)

    def read_aggregation_set(self, queue: str, group: str, set_id: str
                             ) -> tuple[list[TaskMessage], int]:
        """T22 via ``RDB.ReadAggregationSet``; TaskNotFoundError when the set is not registered
        in ``aggregation_sets`` (Asynq's ZSCORE answers nil)."""
        validation.check_queue(queue)
        self.check_group(group)
        validation.check_set_id(set_id)
        reply = self._send("read_aggregation_set", queue, group=group, set_id=set_id)
        return [self.decode(_unb64(d)) for d in reply["msgs"]], int(reply["deadline"])

    def delete_aggregation_set(self, queue: str, group: str, set_id: str) -> None:
        """T23 via ``RDB.DeleteAggregationSet``."""
        validation.check_queue(queue)
        self.check_group(group)
        validation.check_set_id(set_id)
        self._send("delete_aggregation_set", queue, group=group, set_id=set_id)

    def reclaim_stale_aggregation_sets(self, queue: str) -> int:
        """T24: Asynq's recoverer's ``recoverStaleAggregationSets`` pass (with
        :attr:`components`) or ``RDB.ReclaimStaleAggregationSets`` alone; the count is the
        sets due before."""
        validation.check_queue(queue)
        if self.components:
            args = {"part": "aggregation_sets"}
            return int(self._component("component_recover", queue, args)["count"])
        return int(self._send("reclaim_stale_aggregation_sets", queue))

    # --- Asynq's components only (no single-script equivalent) ------------------------------
    def aggregate(self, queue: str, set_ids: dict[str, str], task_ids: dict[str, str]
                  ) -> list[tuple[str, list[bytes]]]:
        """One pass of Asynq's aggregator over ``queue``: for every group ``ListGroups``
        answers, ``AggregationCheck`` (the policy's grace, max delay and max size), and for a
        staged set ``ReadAggregationSet``, the handler, ``Client.Enqueue`` of its task and
        ``DeleteAggregationSet``. The handler returns a task of type ``aggregated`` whose
        payload is the members' payloads joined by ``|``. ``set_ids``/``task_ids`` name, per
        group, the set and the aggregated task (canonical random UUIDs; Asynq is made to draw
        them). Returns (group, member payloads) per set the handler was given, in order."""
        validation.check_queue(queue)
        for names in (set_ids, task_ids):
            if not isinstance(names, dict):
                raise TypeError(f"set_ids and task_ids must map group -> UUID, got {names!r}")
            for group, name in names.items():
                self.check_group(group)
                _check_uuid4(name)
        p = self.policy
        reply = self._component("component_aggregate", queue,
                                {"set_ids": set_ids, "task_ids": task_ids},
                                grace=p.aggregation_grace, max_delay=p.aggregation_max_delay,
                                max_size=p.aggregation_max_size)
        return [(seen["group"], [_unb64(d) if d else b"" for d in seen["payloads"] or []])
                for seen in reply.get("extra") or []]

    def process(self, msg: TaskMessage, ending: Ending, error: str = "boom",
                lease: int | None = None, fail_writes: int = 0) -> int:
        """Asynq's processor ends active task ``msg`` as its handler returned ``ending``
        (``handleSucceededMessage``, ``handleFailedMessage`` or, for ABORTED, ``requeue``),
        holding a lease that expires at ``lease`` (Unix s; None: the task's lease score now,
        what its heartbeater last wrote, or an expired lease when it has none). The retry
        delay comes from the policy. The first ``fail_writes`` writes are lost (the
        connection broke); Asynq hands a lost write to its syncer. Returns how many writes
        wait for :meth:`sync`."""
        self.check_message(msg)
        ending = Ending(ending)
        validation.check_text("error", error)
        if lease is not None:
            validation.check_int("lease", lease)
        validation.check_int("fail_writes", fail_writes)
        if fail_writes < 0:
            raise ValueError(f"fail_writes must be >= 0, got {fail_writes}")
        if lease is None:
            score = self.client.zscore(keys.lease(msg.queue), msg.id)
            lease = 0 if score is None else int(score)
        delays = {f"{msg.id}:{msg.retried}": self.policy.retry_delay_for(msg.id, msg.retried)}
        args = {"ending": ending.value, "error": error, "lease": lease,
                "delays": delays, "fail_writes": fail_writes}
        return int(self._component("component_finish", msg.queue, args,
                                   msg=_b64(self.encode(msg)))["count"])

    def sync(self) -> dict[str, Any]:
        """One tick of Asynq's syncer over the writes :meth:`process` lost: a request past its
        deadline (the worker's lease) is dropped, the others run again. Returns ``ran``,
        ``failed``, ``dropped``, ``errors`` and ``waiting``."""
        reply: dict[str, Any] = self._send("component_sync", None)
        return reply

    def _retry_delays(self, queue: str) -> dict[str, int]:
        """The policy's retry delay of every task holding a lease, by ``<id>:<retried>``: what
        the recoverer's RetryDelayFunc answers (Asynq gives that function no task id)."""
        delays = {}
        members: list[bytes] = list(self.client.zrange(keys.lease(queue), 0, -1))  # type: ignore[arg-type]
        for member in members:
            task_id = member.decode()
            data = self.client.hget(keys.task(queue, task_id), "msg")
            retried = self.decode(data).retried if isinstance(data, bytes) else 0
            delays[f"{task_id}:{retried}"] = self.policy.retry_delay_for(task_id, retried)
        return delays

    # --- result writer and queue flag (T26, T27) -----------------------------------------------
    def write_result(self, queue: str, task_id: str, data: bytes) -> int:
        """T26 via ``RDB.WriteResult``."""
        validation.check_queue(queue)
        validation.check_task_id(task_id)
        validation.check_bytes("data", data)
        return int(self._send("write_result", queue, id=task_id, data=_b64(data)))

    def pause(self, queue: str) -> None:
        """T27 via ``RDB.Pause`` (no registration check in Asynq)."""
        self._send("pause", validation.check_queue(queue))

    def unpause(self, queue: str) -> None:
        """T27 via ``RDB.Unpause``."""
        self._send("unpause", validation.check_queue(queue))

    # --- inspector (T28–T41) ------------------------------------------------------------------
    def delete_task(self, queue: str, task_id: str) -> None:
        """T28 via ``RDB.DeleteTask``."""
        self._task_op("delete_task", queue, task_id)

    def archive_task(self, queue: str, task_id: str) -> None:
        """T29 via ``RDB.ArchiveTask``."""
        self._task_op("archive_task", queue, task_id)

    def run_task(self, queue: str, task_id: str) -> None:
        """T30 via ``RDB.RunTask``."""
        self._task_op("run_task", queue, task_id)

    def _task_op(self, op: str, queue: str, task_id: str) -> None:
        validation.check_queue(queue)
        validation.check_task_id(task_id)
        self._send(op, queue, id=task_id)

    def delete_all_tasks(self, queue: str, state: TaskState, group: str | None = None) -> int:
        """T36–T38 via ``RDB.DeleteAll<State>Tasks``."""
        return self._bulk("delete_all", queue, state, group)

    def archive_all_tasks(self, queue: str, state: TaskState, group: str | None = None) -> int:
        """T33–T35 via ``RDB.ArchiveAll<State>Tasks``."""
        return self._bulk("archive_all", queue, state, group)

    def run_all_tasks(self, queue: str, state: TaskState, group: str | None = None) -> int:
        """T31–T32 via ``RDB.RunAll<State>Tasks``."""
        return self._bulk("run_all", queue, state, group)

    def _bulk(self, kind: str, queue: str, state: object, group: object) -> int:
        validation.check_queue(queue)
        parsed, name = validation.check_bulk_state(kind, state, group)
        return int(self._send(f"{kind}_tasks", queue, state=parsed.value, group=name or ""))

    def remove_queue(self, queue: str, force: bool = False) -> None:
        """T40/T41 via ``RDB.RemoveQueue``."""
        validation.check_queue(queue)
        validation.check_bool("force", force)
        self._send("remove_queue", queue, force=force)


def client_for(url: str) -> redis.Redis | RedisCluster:
    """The client for a URL :class:`AsynqGoBroker` and the driver accept: ``redis://``,
    ``rediss://`` or ``unix://`` (one database of one server), or ``redis+cluster://host:port``
    (a Redis Cluster, by any node; database 0 only), whose client routes by slot.

    >>> client_for("redis+cluster://127.0.0.1:7000/3")
    Traceback (most recent call last):
    ...
    ValueError: a Redis Cluster has database 0 only, got 'redis+cluster://127.0.0.1:7000/3'
    """
    if not isinstance(url, str) or not url.startswith(
            ("redis://", "rediss://", "unix://", f"{CLUSTER_SCHEME}://")):
        raise ValueError(f"url must be a redis:// URL naming the database (or "
                         f"{CLUSTER_SCHEME}://host:port for a cluster), got {url!r}")
    if not url.startswith(f"{CLUSTER_SCHEME}://"):
        return redis.Redis.from_url(url)
    seed = "redis://" + url.removeprefix(f"{CLUSTER_SCHEME}://")
    if urlsplit(seed).path.strip("/") not in ("", "0"):
        raise ValueError(f"a Redis Cluster has database 0 only, got {url!r}")
    return RedisCluster.from_url(seed)


def _with_lock(msg: TaskMessage) -> TaskMessage:
    """msg with unique_key set to its lock key, as Asynq's client sets it before RDB sees it."""
    validation.check_unique_key(msg)
    return replace(msg, unique_key=msg.unique_key or keys.unique(msg.queue, msg.type, msg.payload))


def _check_uuid4(set_id: object) -> str:
    """A set id Asynq could have generated: a canonical random UUID string."""
    validation.check_set_id(set_id)
    assert isinstance(set_id, str)
    try:
        parsed = uuid.UUID(set_id)
    except ValueError:
        parsed = None
    if parsed is None or str(parsed) != set_id or parsed.version != 4:
        raise ValueError(f"set_id must be a canonical random UUID such as str(uuid.uuid4()) "
                         f"(Asynq names aggregation sets that way), got {set_id!r}")
    return set_id


def asynq_fixed(policy: Policy, version: str = DEFAULT_VERSION) -> Policy:
    """``policy`` with the fields Asynq ``version`` hard-codes set to Asynq's values, so that
    an AsynqGoBroker accepts it.

    >>> from model.policy import Policy
    >>> asynq_fixed(Policy(max_archive_size=3, retention=5)).max_archive_size
    10000
    """
    fixed: dict[str, Any] = dict(_FIXED_BY_ASYNQ)
    if _version_tuple(_check_version(version)) < (0, 25, 0):
        fixed["janitor_batch_size"] = _FIXED_BATCH_BEFORE_V025
    return replace(policy, **fixed)


def version_of(variant: str) -> str:
    """The Asynq version an ``asynq-vX.Y.Z`` variant claims to behave like.

    >>> version_of("asynq-v0.24.0")
    'v0.24.0'
    """
    if not isinstance(variant, str) or not variant.startswith("asynq-v"):
        raise ValueError(f"only an asynq-vX.Y.Z variant runs on Asynq's own code, got {variant!r}")
    return _check_version(variant.removeprefix("asynq-"))


def _check_policy(policy: Policy, version: str) -> None:
    """Refuse a policy whose hard-coded-in-Asynq fields differ from Asynq's values."""
    for name, value in _FIXED_BY_ASYNQ.items():
        if getattr(policy, name) != value:
            raise ValueError(f"policy.{name}={getattr(policy, name)!r}, but Asynq {version} "
                             f"hard-codes {value!r}; AsynqGoBroker cannot change it")
    if _version_tuple(version) < (0, 25, 0) and policy.janitor_batch_size != _FIXED_BATCH_BEFORE_V025:
        raise ValueError(f"policy.janitor_batch_size={policy.janitor_batch_size}, but Asynq "
                         f"{version} hard-codes {_FIXED_BATCH_BEFORE_V025}")


def _version_tuple(version: str) -> tuple[int, ...]:
    """(major, minor, patch); a pseudo-version counts as its base release's (close enough
    for the API generation it has).

    >>> _version_tuple("v0.26.1-0.20260514123454-785bb7208cb0")
    (0, 26, 1)
    """
    return tuple(int(part) for part in version[1:].split("-")[0].split("."))


def go_available() -> bool:
    """True when a ``go`` binary is on PATH (the driver can be built)."""
    return shutil.which("go") is not None


def require_asynq() -> bool:
    """True when a missing Go or a failed driver build must fail the run (CI sets
    ``KEYSIM_REQUIRE_ASYNQ=1``) instead of skipping."""
    return os.environ.get("KEYSIM_REQUIRE_ASYNQ", "") not in ("", "0")


__all__ = ["CLUSTER_SCHEME", "GROUP_OPERATIONS", "AsynqGoBroker", "DriverError",
           "DriverUnavailable", "KeysimError", "UnsupportedOperation", "build_driver",
           "client_for", "go_available", "require_asynq"]
