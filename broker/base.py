"""``BrokerBase``: the plumbing every operation shares — client, variant, policy, virtual clock,
script calls, status mapping, input validation, queue registration and snapshots."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import redis

from broker import calls
from broker.cluster_wire import wire_for
from broker.codec import decode_message, encode_message
from broker.scripting import Arg, Client, ScriptRunner
from broker.variants import Quirk, Variant, variant
from model import keys, validation
from model.clock import VirtualClock
from model.errors import ERROR_FOR, ScriptError
from model.message import TaskMessage
from model.policy import Policy
from model.snapshot import FieldValue, KeyEntry, KeyspaceSnapshot, KeyType, zset_value
from model.transitions import Outcome


def text(value: bytes | str) -> str:
    """Redis bytes as lossless text (undecodable bytes survive as surrogates)."""
    return value if isinstance(value, str) else value.decode("utf-8", "surrogateescape")


class BrokerBase:
    """State and helpers shared by the client, server and inspector operations."""

    def __init__(
        self,
        client: Client,
        variant: str | Variant = "reference",
        policy: Policy | None = None,
        clock: VirtualClock | None = None,
    ) -> None:
        self._client = client
        self.variant = variant if isinstance(variant, Variant) else _lookup(variant)
        self.policy = policy if policy is not None else self.variant.policy
        self.clock = clock if clock is not None else VirtualClock()
        self._run = ScriptRunner.shared(client, self.variant)
        #: The pipeline every write (script call or command) and every snapshot goes out on,
        #: on a connection of its own (one per node on a cluster client: ``ClusterWire``) for
        #: the broker's lifetime. Whatever stands here is used: a wrapper with the same methods
        #: may add commands to each batch (harness.observe does).
        self.wire: Any = wire_for(client, hold=True)
        #: Queues this client has registered, with the ``published_queues_cache`` quirk (Asynq's
        #: ``queuesPublished``): their enqueues skip the SADD. Empty and unused otherwise.
        self.published_queues: set[str] = set()

    @property
    def client(self) -> Client:
        """The Redis client the broker runs on (one server's, or a cluster's)."""
        return self._client

    @property
    def server_client(self) -> redis.Redis:
        """The client, for code that works on one server only (the simulator's pipelines and
        memory figures); TypeError on a cluster client, whose commands go to several nodes."""
        if not isinstance(self._client, redis.Redis):
            raise TypeError(f"this needs one server's client, not a {type(self._client).__name__}")
        return self._client

    def release_connection(self) -> None:
        """Give the connection the broker's script calls hold back to the client's pool (the
        next call takes one again). Brokers that come and go on one client — one per example
        of the stateful machine — call this when done, rather than wait for the collector."""
        self.wire.release()

    # --- variant ---------------------------------------------------------------------------
    def quirk(self, quirk: Quirk) -> bool:
        """True when this broker's variant has ``quirk`` switched on."""
        return self.variant.has(quirk)

    # --- time ------------------------------------------------------------------------------
    @property
    def now_s(self) -> int:
        return self.clock.seconds

    @property
    def now_ms(self) -> int:
        return self.clock.milliseconds

    def stats_deadline_ms(self) -> int:
        """Virtual deadline of a daily counter first incremented now."""
        return calls.stats_deadline_ms(self.now_s, self.policy)

    # --- scripts ---------------------------------------------------------------------------
    def call(self, script: str, keys_: Sequence[str], args: Sequence[Arg] = (), *,
             register: str | None = None) -> list[Any]:
        """Run ``script``; raise the KeysimError its status names; return the values after it.

        ``register``: first add that queue to ``asynq:queues`` (as Asynq's client does before
        every enqueue-family script), in the same round trip. A Lua error (an Asynq defect a
        variant reproduces) becomes :class:`ScriptError`.
        """
        if register is not None and self.quirk(Quirk.PUBLISHED_QUEUES_CACHE):
            if register in self.published_queues:
                register = None
            else:
                self.published_queues.add(register)
        try:
            reply = self._script(script, keys_, args, register)
        except redis.ResponseError as err:
            raise ScriptError(f"{script}: {err}") from err
        status = text(reply[0])
        if status != "OK":
            outcome = Outcome(status.lower())
            raise ERROR_FOR[outcome](f"{script}: {outcome.value}")
        return list(reply[1:])

    def _script(self, script: str, keys_: Sequence[str], args: Sequence[Arg],
                register: str | None) -> Any:
        """The script's raw reply; sent alone, or pipelined after the registration."""
        def queue_all(pipe: Any) -> None:
            if register is not None:
                pipe.sadd(keys.ALL_QUEUES, register)
            self._run.queue_on(pipe, script, keys_, args)
        at = 0 if register is None else 1
        replies = self._execute(queue_all, script_at=at)
        for reply in replies[:at + 1]:
            if isinstance(reply, Exception):
                raise reply
        return replies[at]

    def _command(self, *command: Arg) -> Any:
        """Send one plain command; its reply. Like every write of the broker, it goes out on
        :attr:`wire`, so whatever wraps the wire sees every change the broker makes."""
        (reply,) = self._execute(lambda pipe: pipe.queue_command(command))
        if isinstance(reply, Exception):
            raise reply
        return reply

    # --- validation ------------------------------------------------------------------------
    # The rules live in model.validation, shared with the reference model; these bind policy.
    check_message = staticmethod(validation.check_message)
    check_group = staticmethod(validation.check_group)

    def check_ttl(self, ttl: int) -> int:
        """A unique lock needs a whole-second TTL of at least ``policy.min_unique_ttl``."""
        return validation.check_ttl(ttl, self.policy.min_unique_ttl)

    # --- codec -----------------------------------------------------------------------------
    @staticmethod
    def encode(msg: TaskMessage) -> bytes:
        return encode_message(msg)

    @staticmethod
    def decode(data: bytes) -> TaskMessage:
        return decode_message(data)

    # --- registry --------------------------------------------------------------------------
    def register(self, queue: str) -> None:
        """SADD asynq:queues, as Asynq's client does before every enqueue-family script."""
        self._command("SADD", keys.ALL_QUEUES, queue)

    def queues(self) -> frozenset[str]:
        """Members of ``asynq:queues``."""
        return frozenset(text(m) for m in self.client.smembers(keys.ALL_QUEUES))

    # --- snapshots ---------------------------------------------------------------------------
    def snapshot(self, queue: str) -> KeyspaceSnapshot:
        """Every live key of ``queue``, read in one round trip (the snapshot script and a
        SISMEMBER, see :meth:`queue_snapshot`)."""
        keys.validate_name("queue", queue)
        found, registered = self._execute(lambda pipe: self.queue_snapshot(pipe, queue))
        if isinstance(found, Exception):
            raise found
        return self.snapshot_from(queue, found, registered)

    def queue_snapshot(self, pipe: Any, queue: str) -> None:
        """Queue on ``pipe`` the two commands a snapshot of ``queue`` reads: the snapshot script
        (every key of ``queue``, whatever its TTL) and SISMEMBER of ``asynq:queues``."""
        self._run.queue_on(pipe, *calls.snapshot(queue))
        pipe.sismember(keys.ALL_QUEUES, queue)

    def snapshot_from(self, queue: str, found: list[Any], registered: Any) -> KeyspaceSnapshot:
        """The snapshot of ``queue`` from the replies to :meth:`queue_snapshot`'s commands,
        judged now: keys whose virtual TTL has passed since they were read are left out."""
        now = self.now_ms
        entries = {entry.key: entry for entry in map(self._entry, found)
                   if entry.expire_at_ms is None or entry.expire_at_ms > now}
        return KeyspaceSnapshot(queue, now, entries, registered=bool(registered))

    def _execute(self, queue_all: Callable[[Any], None], script_at: int = 0) -> list[Any]:
        """Run the pipeline ``queue_all`` builds; each reply is a value or the error it raised.
        Run it again, scripts reloaded, when Redis lost the script queued at ``script_at``
        (NOSCRIPT: it did not run); another script's NOSCRIPT only makes the next call reload."""
        for attempt in (1, 2):
            try:
                queue_all(self.wire)
            except BaseException:
                self.wire.reset()
                raise
            replies: list[Any] = self.wire.execute()
            if any(isinstance(r, redis.exceptions.NoScriptError) for r in replies):
                self._run.forget()
            if attempt == 2 or not isinstance(replies[script_at], redis.exceptions.NoScriptError):
                break
        return replies

    @staticmethod
    def _entry(raw: list[Any]) -> KeyEntry:
        """One key of the snapshot script's reply as a KeyEntry (see :func:`decoded_entry`)."""
        return decoded_entry(raw[0], raw[1], int(raw[2]), tuple(raw[3]))

    def expire_due(self, queue: str) -> int:
        """Delete the queue's TTL keys whose virtual deadline passed; return how many."""
        validation.check_queue(queue)
        (swept,) = self.call(*calls.sweep_expired(queue, self.clock.now_ns))
        return int(swept)


@lru_cache(maxsize=16_384)
def decoded_entry(key: bytes | str, kind: bytes | str, expire_at: int, value: tuple[Any, ...]
                  ) -> KeyEntry:
    """A key as the snapshot script replies it (name, type, virtual deadline or -1, flat
    value), decoded. Cached: from one step to the next most keys do not change, and decoding
    task messages is most of a snapshot's cost. Entries are shared, so never mutate one.

    >>> decoded_entry(b"asynq:{q}:pending", b"list", -1, (b"t1",))
    KeyEntry(key='asynq:{q}:pending', type=<KeyType.LIST: 'list'>, value=('t1',), expire_at_ms=None)
    """
    kind_ = KeyType(text(kind))
    expire = None if expire_at < 0 else expire_at
    return KeyEntry(text(key), kind_, _value(kind_, value), expire)


def _value(kind: KeyType, value: tuple[Any, ...]) -> Any:
    if kind is KeyType.STRING:
        return text(value[0])
    if kind is KeyType.LIST:
        return tuple(text(v) for v in value)
    if kind is KeyType.SET:
        return frozenset(text(v) for v in value)
    if kind is KeyType.ZSET:
        return zset_value((text(value[i]), float(value[i + 1])) for i in range(0, len(value), 2))
    fields: dict[str, FieldValue] = {}
    for i in range(0, len(value), 2):
        name = text(value[i])
        fields[name] = _field(name, value[i + 1])
    return fields


def _field(name: str, raw: bytes) -> FieldValue:
    if name == "msg":
        try:
            return decode_message(raw)
        except ValueError:
            return text(raw)
    return text(raw)


def _lookup(name: str) -> Variant:
    return variant(name)
