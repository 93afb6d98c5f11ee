"""A Redis connection that can only send read commands, plus URL/password handling.

The guard sits in the connection's command packer, which every path of redis-py goes through
(single commands, pipelines, MULTI/EXEC), so a write is refused *before* a byte is sent:

>>> check_command(("DEL", "asynq:{q}:t:1"))
Traceback (most recent call last):
...
audit.readonly.WriteRefused: refused DEL: the audit sends only read commands

Allowed are exactly the read commands the audit uses, the connection handshake (AUTH, HELLO,
SELECT, PING, CLIENT SETINFO|MAINT_NOTIFICATIONS), CLUSTER SLOTS (which master serves which
slots, for the audit of a cluster), MULTI/EXEC, which make a group of reads atomic,
and EVAL_RO, whose script Redis itself runs read-only (a write inside it is refused by the server;
plain EVAL, EVALSHA and FCALL stay refused):

>>> check_command(("EVAL", "return redis.call('DEL', KEYS[1])", "1", "k"))
Traceback (most recent call last):
...
audit.readonly.WriteRefused: refused EVAL: the audit sends only read commands
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis

from broker.servers import mask_url

#: Commands the audit may send (upper case). MEMORY and CLIENT only with the listed subcommands.
READ_COMMANDS = frozenset({
    "SCAN", "TYPE", "EXISTS", "PTTL", "PEXPIRETIME", "GET", "HGET", "HMGET", "HKEYS", "HLEN",
    "LRANGE", "LLEN", "LPOS", "ZRANGE", "ZCARD", "ZSCORE", "SMEMBERS", "SISMEMBER", "SCARD",
    "INFO", "PING", "ECHO", "AUTH", "HELLO", "SELECT", "MULTI", "EXEC", "DISCARD",
    "EVAL_RO",  # taskread.READ_TASKS_LUA; read-only by the server's rule, not by our trust
})
# CLIENT SETINFO and MAINT_NOTIFICATIONS are redis-py's connection handshake (no data written).
SUBCOMMANDS = {"MEMORY": frozenset({"USAGE"}), "CLIENT": frozenset({"SETINFO", "MAINT_NOTIFICATIONS"}),
               "CLUSTER": frozenset({"SLOTS"})}
#: Environment variables consulted, in order, when the URL carries no password.
PASSWORD_ENV = ("KEYSIM_REDIS_PASSWORD", "REDISCLI_AUTH")
SCHEMES = ("redis", "rediss", "unix")


class WriteRefused(Exception):
    """The audit tried to send a command that is not a read; nothing was sent."""


class AuditUnavailable(Exception):
    """Redis cannot be reached, refuses the credentials or denies a command (exit code 2)."""


def _word(arg: Any) -> str:
    return (arg.decode("ascii", "replace") if isinstance(arg, bytes) else str(arg)).upper()


#: Spellings (str or bytes, exactly as the caller passed them) already allowed: a one-word name,
#: or a (name, subcommand) pair. The audit packs millions of commands with a handful of spellings;
#: this skips re-parsing them. Only a spelling that passed the full check below is ever added.
_ALLOWED_SPELLINGS: set[Any] = set()
_MAX_SPELLINGS = 64


def check_command(args: tuple[Any, ...]) -> None:
    """Raise :class:`WriteRefused` unless ``args`` is a read command of :data:`READ_COMMANDS`."""
    if not args:
        raise WriteRefused("refused an empty command")
    first = args[0]
    spelled = isinstance(first, str | bytes)
    if spelled and first in _ALLOWED_SPELLINGS:
        return
    pair = (first, args[1]) if spelled and len(args) > 1 and isinstance(args[1], str | bytes) else None
    if pair is not None and pair in _ALLOWED_SPELLINGS:
        return
    parts = _word(first).split()  # redis-py sends "MEMORY USAGE" as one argument
    name = parts[0]
    sub = parts[1] if len(parts) > 1 else (_word(args[1]) if len(args) > 1 else "")
    if name in READ_COMMANDS:
        _remember(first if spelled and len(parts) == 1 else None)
        return
    if sub in SUBCOMMANDS.get(name, frozenset()):
        _remember(pair if len(parts) == 1 else first if spelled else None)
        return
    shown = f"{name} {sub}" if name in SUBCOMMANDS else name
    raise WriteRefused(f"refused {shown}: the audit sends only read commands")


def _remember(spelling: Any) -> None:
    if spelling is not None and len(_ALLOWED_SPELLINGS) < _MAX_SPELLINGS:
        _ALLOWED_SPELLINGS.add(spelling)


class _GuardedPacker:
    """Wraps redis-py's command packer: checks each command, then packs it."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def pack(self, *args: Any) -> Any:
        check_command(args)
        return self._inner.pack(*args)


def _guarded(cls: type[Any]) -> type[Any]:
    """A subclass of connection class ``cls`` whose packer refuses non-read commands."""

    class Guarded(cls):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            packer: Any = vars(self)["_command_packer"]  # set by the base __init__
            self._command_packer = _GuardedPacker(packer)

    Guarded.__name__ = f"ReadOnly{cls.__name__}"
    return Guarded


def password_from_env(env: dict[str, str] | None = None) -> str | None:
    """The first non-empty of :data:`PASSWORD_ENV`, or None."""
    environ = os.environ if env is None else env
    return next((environ[n] for n in PASSWORD_ENV if environ.get(n)), None)


def masked(text: str, password: str | None) -> str:
    """``text`` with every occurrence of ``password`` replaced by ``***``."""
    return text.replace(password, "***") if password else text


def url_db(url: str) -> int:
    """The database ``url`` selects: its path (redis://, rediss://) or its ``db`` query
    parameter, 0 when it names none. redis-py would read ``/abc`` as database 0; here anything
    but a non-negative integer is an error.

    >>> url_db("redis://h:6379/3"), url_db("redis://h"), url_db("unix:///tmp/r.sock?db=2")
    (3, 0, 2)
    >>> url_db("redis://:secret@h/abc")
    Traceback (most recent call last):
    ...
    ValueError: the database in redis://:***@h/abc must be a non-negative integer, got 'abc'
    """
    parts = urlsplit(url)
    named = list(parse_qs(parts.query).get("db", []))
    if parts.scheme != "unix" and parts.path.strip("/"):
        named.insert(0, unquote(parts.path.strip("/")))
    for value in named:
        if not (value.isascii() and value.isdigit()):
            raise ValueError(f"the database in {mask_url(url)} must be a non-negative integer, "
                             f"got {value!r}")
    return int(named[0]) if named else 0


def connect(url: str, *, env: dict[str, str] | None = None, timeout: float = 5.0) -> redis.Redis:
    """A read-only client for ``url`` (redis://, rediss:// for TLS, unix://), checked by PING.

    ``redis://user:pass@host:port/db`` selects an ACL user; without a password in the URL the
    password comes from ``KEYSIM_REDIS_PASSWORD`` or ``REDISCLI_AUTH``. Errors never show it.
    Raises ValueError for a malformed URL (a database that is not an integer included) and
    :class:`AuditUnavailable` when Redis refuses.
    """
    if not isinstance(url, str) or urlsplit(url).scheme not in SCHEMES:
        shown = mask_url(url) if isinstance(url, str) else repr(url)
        raise ValueError(f"REDIS_URL must start with redis://, rediss:// or unix://, got {shown!r}")
    url_db(url)
    url_password = urlsplit(url).password
    password = url_password or password_from_env(env)
    options: dict[str, Any] = {"socket_connect_timeout": timeout, "socket_timeout": timeout * 6}
    if password and not url_password:
        options["password"] = password
    pool = redis.ConnectionPool.from_url(url, **options)
    pool.connection_class = _guarded(pool.connection_class)
    client = redis.Redis(connection_pool=pool)
    try:
        client.ping()
    except (redis.RedisError, OSError) as err:
        client.close()
        raise AuditUnavailable(f"cannot use {mask_url(url)}: {masked(str(err), password)}") from None
    return client
