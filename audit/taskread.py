"""Reading what the audit needs of many task hashes: one round trip per batch, few Python objects.

For every task key the audit needs the lifecycle fields (HMGET), the expiry (PEXPIRETIME, or
PTTL where the server or ACL lacks it: :mod:`audit.capabilities`), the exact size (MEMORY
USAGE … SAMPLES 0) and, only when the key is not a hash, its TYPE. Two ways give
exactly the same :class:`TaskReplies`:

* **script** (default when permitted): one ``EVAL_RO`` per :data:`SCRIPT_BATCH` keys runs
  :data:`READ_TASKS_LUA`, which issues those reads server-side and returns one flat array.
  ``EVAL_RO`` is read-only by Redis' own rule: a write inside it is refused by the server.
* **pipeline**: the same commands, three a key, packed by the connection's guarded packer and
  sent in one write on one connection (no redis-py ``Pipeline`` objects).

The script is tried first; when the server refuses it (a read-only ACL user without
``+eval_ro``, scripting disabled, a server without EVAL_RO, a read inside it refused) the
reader switches to the pipeline for the rest of the audit. Where deadlines come from PTTL the
script is not tried (it reads PEXPIRETIME). In the pipeline an optional read that is refused
(PEXPIRETIME/PTTL, MEMORY USAGE) leaves its error reply in its place for the caller to judge.

>>> TASK_FIELDS
('msg', 'state', 'group', 'unique_key', 'pending_since')
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from broker.proto.taskmessage_pb2 import TaskMessage as TaskMessagePB

#: The task-hash fields the audit reads, in reply order.
TASK_FIELDS = ("msg", "state", "group", "unique_key", "pending_since")
#: Keys per EVAL_RO call: bounds how long one call holds the (single-threaded) server.
SCRIPT_BATCH = 500
READ_MODES = ("auto", "script", "pipeline")

# KEYS: task keys; ARGV: the field names. Per key, appended to `out`: the fields' values (false for
# an absent field), PEXPIRETIME and MEMORY USAGE (false when the key is gone). A key whose HMGET
# fails because it is not a hash adds its 0-based position and TYPE to `wrong`; any other error
# fails the script. Returns {out, wrong}.
READ_TASKS_LUA = """\
local out, wrong, n, nf = {}, {}, 0, #ARGV
for i, key in ipairs(KEYS) do
  local values = redis.pcall('HMGET', key, unpack(ARGV))
  if values.err then
    if string.sub(values.err, 1, 9) ~= 'WRONGTYPE' then return redis.error_reply(values.err) end
    wrong[#wrong + 1] = i - 1
    wrong[#wrong + 1] = redis.call('TYPE', key).ok
    values = {}
  end
  for f = 1, nf do out[n + f] = values[f] or false end
  out[n + nf + 1] = redis.call('PEXPIRETIME', key)
  out[n + nf + 2] = redis.call('MEMORY', 'USAGE', key, 'SAMPLES', '0') or false
  n = n + nf + 2
end
return {out, wrong}
"""

_FIELDS_B = tuple(f.encode() for f in TASK_FIELDS)
_STRIDE = len(TASK_FIELDS) + 2  # fields, PEXPIRETIME, MEMORY USAGE


@dataclass(frozen=True, slots=True)
class TaskReplies:
    """Replies for ``n`` keys: ``flat[k*STRIDE:(k+1)*STRIDE]`` is key k's field values, the
    deadline read (``ttl_command``'s reply) and MEMORY USAGE (None when the key is gone; either
    of the last two may be an error reply); ``wrong`` maps the position of each key that is not a
    hash to its TYPE (its field values are then all None). ``sent_ms``: when the reads were sent."""

    flat: list[Any]
    wrong: dict[int, str]
    ttl_command: bytes = b"PEXPIRETIME"
    sent_ms: int = 0

    STRIDE = _STRIDE


class Inflight:
    """Commands sent in one write on a pooled connection, which stays held until their replies
    are collected (or the request is abandoned): the server works while the caller does.
    Packing goes through the connection's packer, so the read-only guard sees every command."""

    def __init__(self, client: redis.Redis, commands: Sequence[tuple[Any, ...]]) -> None:
        self._pool = client.connection_pool
        conn: Any = self._pool.get_connection()  # redis-py's Connection methods are untyped
        self._conn: Any = conn
        self._count = len(commands)
        try:
            # One write (redis-py would send each 6 kB piece separately): one wake-up of the server.
            conn.send_packed_command([b"".join(conn.pack_commands(commands))])
        except BaseException:
            self.abandon()
            raise

    def collect(self) -> list[Any]:
        """Every reply in order; an error reply is returned as its exception (like
        ``pipeline.execute(raise_on_error=False)``)."""
        conn, self._conn = self._conn, None
        if conn is None:
            raise RuntimeError("replies already collected")
        try:
            out: list[Any] = []
            for _ in range(self._count):
                try:
                    out.append(conn.read_response())
                except redis.exceptions.ResponseError as err:
                    out.append(err)
            return out
        except BaseException:
            conn.disconnect()  # replies may be left unread: never reuse this socket
            raise
        finally:
            self._pool.release(conn)

    def abandon(self) -> None:
        """Drop the connection without reading (idempotent; nothing more is sent)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.disconnect()
            self._pool.release(conn)


def execute(client: redis.Redis, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` in one write and read every reply (see :class:`Inflight`)."""
    return Inflight(client, commands).collect()


class TaskReader:
    """Reads :class:`TaskReplies` by script or pipeline (module docstring). ``mode`` is asked as
    ``"auto"`` (script, falling back to pipeline when refused before any script succeeded),
    ``"script"`` or ``"pipeline"``; afterwards :attr:`mode` says which one is in use."""

    def __init__(self, client: redis.Redis, mode: str = "auto", ttl_command: bytes = b"PEXPIRETIME") -> None:
        if mode not in READ_MODES:
            raise ValueError(f"mode must be one of {READ_MODES}, got {mode!r}")
        self.client = client
        self.asked = mode
        self.ttl_command = ttl_command
        # The script reads PEXPIRETIME: with deadlines from PTTL only the pipeline gives them.
        self.mode = "pipeline" if mode == "auto" and ttl_command != b"PEXPIRETIME" else mode

    def read(self, task_keys: Sequence[bytes]) -> TaskReplies:
        """The replies for ``task_keys`` (raw key names, as SCAN returns them)."""
        return self.submit(task_keys).result()

    def submit(self, task_keys: Sequence[bytes]) -> PendingTasks:
        """Send the reads for ``task_keys`` now; :meth:`PendingTasks.result` waits for them."""
        return PendingTasks(self, task_keys, script=self.mode != "pipeline")

    def _script_refused(self) -> bool:
        """A script call failed: True to fall back to the pipeline, False to raise."""
        if self.asked == "script" or self.mode == "script":
            return False  # asked for, or already worked: the failure is real
        self.mode = "pipeline"
        return True


class PendingTasks:
    """Reads of one batch of task keys in flight (:meth:`TaskReader.submit`)."""

    def __init__(self, reader: TaskReader, task_keys: Sequence[bytes], script: bool) -> None:
        self._reader, self._keys, self._script = reader, task_keys, script
        self._sent_ms = now_ms()
        self._flight = Inflight(reader.client, _script_calls(task_keys) if script
                                else _pipeline_calls(task_keys, reader.ttl_command))

    def result(self) -> TaskReplies:
        """Wait for the replies (falling back to a pipeline read if the script was refused)."""
        replies = self._flight.collect()
        reader = self._reader
        if not self._script:
            return _from_pipeline(reader, self._keys, replies, self._sent_ms)
        refused = next((r for r in replies if isinstance(r, Exception)), None)
        if refused is None:
            reader.mode = "script"
            return _from_script(replies, self._sent_ms)
        if not reader._script_refused():
            raise refused
        sent_ms = now_ms()
        calls = _pipeline_calls(self._keys, reader.ttl_command)
        return _from_pipeline(reader, self._keys, execute(reader.client, calls), sent_ms)

    def abandon(self) -> None:
        """Give up on the replies (idempotent)."""
        self._flight.abandon()


def _script_calls(task_keys: Sequence[bytes]) -> list[tuple[Any, ...]]:
    return [("EVAL_RO", READ_TASKS_LUA, len(batch), *batch, *_FIELDS_B)
            for batch in (task_keys[i:i + SCRIPT_BATCH] for i in range(0, len(task_keys), SCRIPT_BATCH))]


def _from_script(replies: list[Any], sent_ms: int) -> TaskReplies:
    flat: list[Any] = []
    wrong: dict[int, str] = {}
    for n, (values, types) in enumerate(replies):
        base = n * SCRIPT_BATCH
        flat += values
        for i in range(0, len(types), 2):
            wrong[base + int(types[i])] = _text(types[i + 1])
    return TaskReplies(flat, wrong, b"PEXPIRETIME", sent_ms)


def _pipeline_calls(task_keys: Sequence[bytes], ttl_command: bytes) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    for key in task_keys:
        calls += [(b"HMGET", key, *_FIELDS_B), (ttl_command, key),
                  (b"MEMORY", b"USAGE", key, b"SAMPLES", b"0")]
    return calls


def _from_pipeline(reader: TaskReader, task_keys: Sequence[bytes], replies: list[Any],
                   sent_ms: int) -> TaskReplies:
    flat: list[Any] = []
    none = (None,) * len(TASK_FIELDS)
    bad: list[int] = []
    for n in range(len(task_keys)):
        values = replies[3 * n]
        if isinstance(values, Exception):
            if not str(values).startswith("WRONGTYPE"):
                raise values  # HMGET itself refused: the audit cannot read task hashes at all
            bad.append(n)  # not a hash: ask what it is
            values = none
        flat += values
        flat += replies[3 * n + 1: 3 * n + 3]
    types = execute(reader.client, [(b"TYPE", task_keys[n]) for n in bad]) if bad else []
    refused = next((t for t in types if isinstance(t, Exception)), None)
    if refused is not None:
        raise refused
    return TaskReplies(flat, {n: _text(t) for n, t in zip(bad, types, strict=True)},
                       reader.ttl_command, sent_ms)


def now_ms() -> int:
    """The client's wall clock in ms: when a batch of reads is sent (a PTTL reply counts from it)."""
    return int(time.time() * 1000)


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


def peek_message(data: bytes) -> TaskMessagePB | None:
    """The parsed protobuf of a ``msg`` value when it is plainly well formed, else None.

    Plainly well formed: it parses and has no unknown fields at all. :func:`broker.codec.decode_message`
    accepts all such bytes (it rejects only a parse error or an unreadable known field, which
    shows up as an unknown one) and its ``TaskMessage`` carries the same field values, so the
    audit can read ``id``, ``queue`` and the timestamps here without building one. None means
    "take the full path" (which decodes, and may report a msg that does not decode).

    >>> from broker.codec import encode_message
    >>> from model.message import TaskMessage
    >>> pb = peek_message(encode_message(TaskMessage(type="t", payload=None, id="i", queue="q")))
    >>> (pb.id, pb.queue) if pb else None
    ('i', 'q')
    >>> peek_message(b"not protobuf") is None
    True
    """
    pb = TaskMessagePB()
    try:
        pb.ParseFromString(data)
    except DecodeError:
        return None
    return None if len(UnknownFieldSet(pb)) else pb
