"""``BrokerBase``: the plumbing every operation shares — client, variant, policy, virtual clock,
script calls, status mapping, input validation, queue registration and snapshots."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import redis

from broker.codec import decode_message, encode_message
from broker.scripting import TTL_SHIFT_MS, Arg, ScriptRunner
from broker.variants import Quirk, Variant, variant
from model import keys, validation
from model.clock import NS, VirtualClock, utc_date
from model.errors import ERROR_FOR, ScriptError
from model.message import TaskMessage
from model.policy import Policy
from model.snapshot import FieldValue, KeyEntry, KeyspaceSnapshot, KeyType, zset_value
from model.transitions import Outcome

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def glob_escape(text: str) -> str:
    """Escape ``text`` for a SCAN MATCH pattern."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def text(value: bytes | str) -> str:
    """Redis bytes as lossless text (undecodable bytes survive as surrogates)."""
    return value if isinstance(value, str) else value.decode("utf-8", "surrogateescape")


class BrokerBase:
    """State and helpers shared by the client, server and inspector operations."""

    def __init__(
        self,
        client: redis.Redis,
        variant: str | Variant = "reference",
        policy: Policy | None = None,
        clock: VirtualClock | None = None,
    ) -> None:
        self.client = client
        self.variant = variant if isinstance(variant, Variant) else _lookup(variant)
        self.policy = policy if policy is not None else self.variant.policy
        self.clock = clock if clock is not None else VirtualClock()
        self._run = ScriptRunner(client, self.variant)

    # --- variant ---------------------------------------------------------------------------
    def quirk(self, quirk: Quirk) -> bool:
        """True when this broker's variant has ``quirk`` switched on."""
        return self.variant.has(quirk)

    # --- time ------------------------------------------------------------------------------
    @property
    def now_s(self) -> int:
        return self.clock.now_ns // NS

    @property
    def now_ms(self) -> int:
        return self.clock.now_ns // 1_000_000

    def stats_keys(self, queue: str) -> list[str]:
        """KEYS for counting: processed daily, processed total, failed daily, failed total."""
        date = utc_date(self.now_s)
        return [keys.processed_daily(queue, date), keys.processed_total(queue),
                keys.failed_daily(queue, date), keys.failed_total(queue)]

    def stats_deadline_ms(self) -> int:
        """Virtual deadline of a daily counter first incremented now."""
        return (self.now_s + self.policy.stats_ttl) * 1000

    # --- scripts ---------------------------------------------------------------------------
    def call(self, script: str, keys_: Sequence[str], args: Sequence[Arg] = ()) -> list[Any]:
        """Run ``script``; raise the KeysimError its status names; return the values after it.

        A Lua error (an Asynq defect a variant reproduces) becomes :class:`ScriptError`.
        """
        try:
            reply = self._run(script, keys_, args)
        except redis.ResponseError as err:
            raise ScriptError(f"{script}: {err}") from err
        status = text(reply[0])
        if status != "OK":
            outcome = Outcome(status.lower())
            raise ERROR_FOR[outcome](f"{script}: {outcome.value}")
        return list(reply[1:])

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
        self.client.sadd(keys.ALL_QUEUES, queue)

    def queues(self) -> frozenset[str]:
        """Members of ``asynq:queues``."""
        return frozenset(text(m) for m in self.client.smembers(keys.ALL_QUEUES))

    # --- observation -----------------------------------------------------------------------
    def snapshot(self, queue: str) -> KeyspaceSnapshot:
        """Every live key of ``queue`` in one round trip (a pipeline of one script + SISMEMBER)."""
        keys.validate_name("queue", queue)
        pattern = glob_escape(keys.queue_prefix(queue)) + "*"
        try:
            raw, registered = self._snapshot_pipeline(pattern, queue).execute()
        except redis.exceptions.NoScriptError:  # the server lost its scripts: load them again
            self._run.forget()
            raw, registered = self._snapshot_pipeline(pattern, queue).execute()
        entries = {entry.key: entry for entry in map(self._entry, raw)}
        return KeyspaceSnapshot(queue, self.now_ms, entries, registered=bool(registered))

    def _snapshot_pipeline(self, pattern: str, queue: str) -> Any:
        pipe = self.client.pipeline(transaction=False)
        self._run.queue_on(pipe, "snapshot", [], [pattern, self.now_ms, 1000])
        pipe.sismember(keys.ALL_QUEUES, queue)
        return pipe

    def _entry(self, raw: list[Any]) -> KeyEntry:
        key, kind, expire_at, value = text(raw[0]), KeyType(text(raw[1])), int(raw[2]), raw[3]
        expire = None if expire_at <= 0 else expire_at - TTL_SHIFT_MS
        return KeyEntry(key, kind, self._value(kind, value), expire)

    def _value(self, kind: KeyType, value: list[Any]) -> Any:
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
            fields[name] = self._field(name, value[i + 1])
        return fields

    def _field(self, name: str, raw: bytes) -> FieldValue:
        if name == "msg":
            try:
                return self.decode(raw)
            except ValueError:
                return text(raw)
        return text(raw)

    def expire_due(self, queue: str) -> int:
        """Delete the queue's TTL keys whose virtual deadline passed; return how many."""
        due = []
        pattern = glob_escape(keys.queue_prefix(queue)) + "*"
        for key in self.client.scan_iter(match=pattern, count=1000):
            at = self.client.pexpiretime(key)
            if at > 0 and at - TTL_SHIFT_MS <= self.now_ms:
                due.append(key)
        if due:
            self.client.delete(*due)
        return len(due)


def _lookup(name: str) -> Variant:
    return variant(name)
