"""What the server and the user's ACL let the audit read, found once before the audit starts.

Two reads are optional, and each has a fallback that keeps every finding exact:

* **Deadlines.** ``PEXPIRETIME`` (Redis ≥ 7.0, Valkey) gives a key's deadline directly. Where it
  is missing (Redis 6.2), renamed away or denied by the ACL, ``PTTL`` gives the time left, and
  the deadline is the time the read was *sent* plus that: never later than the true one (the
  server answered after the send), so a derived deadline can hide a finding that depends on
  "not yet expired" but never invent one. When both are refused, no deadline is known and every
  finding that needs one is UNVERIFIED (:mod:`audit.unverified`).
* **Atomic re-reads.** ``MULTI``/``EXEC`` re-read each candidate finding atomically. Without
  them (a ``+@read``-only user) a candidate is re-read with plain reads, and again after a
  pause, before it is reported (:mod:`audit.verify`).

``EVAL_RO`` (fast task reads) and ``MEMORY USAGE`` (exact sizes) are handled where they are
read (:mod:`audit.taskread`, :mod:`audit.engine`): without them the audit is slower, or sizes are
unknown, but the findings are the same.

>>> Expiry.derive(b"PTTL", 1500, sent_ms=10_000), Expiry.derive(b"PEXPIRETIME", 1500, sent_ms=10_000)
(11500, 1500)
>>> Expiry.derive(b"PTTL", -1, sent_ms=10_000) is None  # no TTL (-2, key gone: also None)
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from model import keys

#: The key the probes read: any key name works; this one is readable by any ACL fit for the audit.
_PROBE_KEY = keys.ALL_QUEUES.encode()
PEXPIRETIME, PTTL = b"PEXPIRETIME", b"PTTL"


@dataclass(frozen=True, slots=True)
class Unread:
    """A read the server refused or does not know: the fact it would have given is unknown."""

    reason: str


@dataclass(frozen=True)
class Expiry:
    """How deadlines are read: ``command`` is PEXPIRETIME or PTTL; ``note`` says why, when it is
    not PEXPIRETIME (empty otherwise)."""

    command: bytes = PEXPIRETIME
    note: str = ""

    @property
    def name(self) -> str:
        return self.command.decode()

    def deadline(self, reply: Any, sent_ms: int) -> int | Unread | None:
        """The deadline (server ms) in ``reply``: None for no TTL or no key; :class:`Unread`
        for an error reply (the read was refused)."""
        if isinstance(reply, Exception):  # the note names both refusals when PTTL failed too
            return Unread(self.note if self.command == PEXPIRETIME and self.note
                          else f"{self.name} refused: {_first_line(reply)}")
        return self.derive(self.command, reply, sent_ms)

    @staticmethod
    def derive(command: bytes, reply: Any, sent_ms: int) -> int | None:
        """A non-error reply of ``command`` as a deadline (None: no TTL, or no key)."""
        if not isinstance(reply, int) or reply < 0:
            return None
        return reply if command == PEXPIRETIME else sent_ms + reply


@dataclass(frozen=True)
class Capabilities:
    """What the probes found (module docstring)."""

    expiry: Expiry = Expiry()
    #: MULTI/EXEC usable; else the reason (for the report).
    atomic: bool = True
    atomic_note: str = ""

    @property
    def consistency(self) -> str:
        """How candidates are confirmed, for the report."""
        return "MULTI/EXEC re-reads" if self.atomic else (
            f"plain re-reads, twice ({self.atomic_note})")


def probe(client: redis.Redis, key: bytes = _PROBE_KEY) -> Capabilities:
    """Ask the server once which deadline command and whether MULTI/EXEC may be used; the
    probes read ``key`` (on a cluster node, pass a key of a slot it serves)."""
    pexp, pttl = _try(client, [(PEXPIRETIME, key)]), _try(client, [(PTTL, key)])
    expiry = Expiry()
    if pexp is not None:
        expiry = (Expiry(PTTL, f"PEXPIRETIME: {pexp}; deadlines from PTTL") if pttl is None
                  else Expiry(PEXPIRETIME, f"PEXPIRETIME: {pexp}; PTTL: {pttl}; no deadline known"))
    multi = _try(client, [(b"MULTI",), (b"EXEC",)])
    return Capabilities(expiry, atomic=multi is None,
                        atomic_note="" if multi is None else f"MULTI/EXEC: {multi}")


def _try(client: redis.Redis, commands: list[tuple[Any, ...]]) -> str | None:
    """Send ``commands`` on a connection that is closed afterwards (a refused EXEC could leave
    it inside a transaction); None when every reply is a success, else the first error."""
    pool = client.connection_pool
    conn: Any = pool.get_connection()  # redis-py's Connection methods are untyped
    try:
        conn.send_packed_command([b"".join(conn.pack_commands(commands))])
        errors = []
        for _ in commands:
            try:
                conn.read_response()
            except redis.exceptions.ResponseError as err:
                errors.append(_first_line(err))
        return errors[0] if errors else None
    finally:
        conn.disconnect()
        pool.release(conn)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
