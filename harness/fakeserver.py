"""The one module that knows fakeredis' internals: fast Lua, commands as words, memory reads.

The stateful machine and the replay run the broker on in-process fakeredis servers. This module
builds them (:func:`new_client`) and reads their memory; nothing else in the repository touches
a private name of fakeredis.

fakeredis runs every EVAL and EVALSHA by compiling the script's text again and then forcing a
full Lua garbage collection; real Redis compiles a script once and lets Lua's incremental
collector work. For the machine, which calls a dozen scripts thousands of times, that is a
third of its time. :func:`compile_once` gives one fakeredis server real Redis' habit: the
server's Lua interpreter is wrapped so that a script's text is compiled the first time and its
compiled chunk is called again after (running a chunk again runs the script afresh: its
``local`` state starts over each time), and the per-call ``collectgarbage()`` is left to Lua.

fakeredis also checks, before every ``redis.call`` a script makes, that the script created no
global variable, by copying the names of all globals into a Python set: another third. For
such a server the question is answered by a flag: ``_G`` gets a ``__newindex`` metamethod (a
new global name is exactly what triggers it) that raises the flag, and a script's end adds one
pass over ``_G`` in Lua for names created around it (``rawset``). Only with the flag up does
fakeredis' own check run, to clean up and raise its own error. (A ``rawset`` global is thus
reported when its script ends, not at the script's next ``redis.call``.) Everything else about
EVAL — KEYS and ARGV, ``redis.call``, error messages, reply conversion — is fakeredis' own
code, unchanged.

Third, :func:`hand_over` lets the broker's :class:`broker.wire.Wire` give each command to the
fake server as its words, as fakeredis' RESP parser would have produced them from the bytes
redis-py sends, so neither side encodes nor parses: it calls the fake socket's
``_process_command``, the very function that parser calls.

Fourth, the server's memory is read directly: :func:`snapshot_from_memory` is a broker's
``snapshot`` without the Lua round trip (the machine's check after every step), and
:func:`memory_image` is the whole database as plain data (the replay's "did this step write?").

It relies on private names of fakeredis: the server's ``_lua_runtime`` and
``_lua_expected_globals`` (without them :func:`compile_once` leaves the server as it was and
returns False), the module function ``_check_for_lua_globals`` (without it only the
compile-once half applies), the fake socket's ``_process_command`` (without it commands
are sent as RESP, as usual) and the server's ``dbs`` (without them the readers answer None and
callers ask Redis). tests/test_fakelua.py checks that scripts answer and write alike either
way; tests/test_bench_machine.py that the memory read equals the snapshot script's.

>>> import fakeredis
>>> client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
>>> compile_once(client)
True
>>> client.eval("return redis.call('INCR', KEYS[1])", 1, "n"), client.eval(
...     "return redis.call('INCR', KEYS[1])", 1, "n")
(1, 2)
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable
from typing import Any

import fakeredis
import redis
from fakeredis.commands_mixins import scripting_mixin

from broker import Broker
from broker.scripting import decode_deadline
from broker.wire import hand_over_to, pack_command
from model import keys
from model.snapshot import KeyspaceSnapshot

#: Distinct script texts remembered per server (the machine has a few dozen; the cap only
#: bounds memory for a caller sending endless one-off scripts).
MAX_CHUNKS = 1024

_GC = ("collectgarbage()", b"collectgarbage()")


#: In Lua: given the expected global names, a function telling whether ``_G`` has another.
_NEW_GLOBAL_FINDER = """
function(expected)
    local G, next = _G, next
    return function()
        for name in next, G do
            if not expected[name] then
                return true
            end
        end
        return false
    end
end
"""


#: In Lua: make ``_G`` call ``mark`` whenever a new global name is assigned; false when ``_G``
#: has a ``__newindex`` of its own already (then every check is the full pass).
_NEW_GLOBAL_ALARM = """
function(mark)
    local meta = getmetatable(_G)
    if meta ~= nil and meta.__newindex ~= nil then
        return false
    end
    meta = meta or {}
    meta.__newindex = function(t, name, value)
        mark()
        rawset(t, name, value)
    end
    setmetatable(_G, meta)
    return true
end
"""


class CompiledChunks:
    """A stand-in for a fakeredis server's ``LuaRuntime``: ``execute`` compiles each text once
    and skips the forced full collection; every other attribute is the runtime's own."""

    def __init__(self, runtime: Any, expected_globals: set[Any]) -> None:
        self.runtime = runtime
        self.chunks: dict[str | bytes, Any] = {}
        self.expected_globals = expected_globals
        names = runtime.table_from({name: True for name in expected_globals})
        self.has_new_global = runtime.eval(_NEW_GLOBAL_FINDER)(names)
        # A one-element list, not an attribute: Lua holds ``raise_flag``, and a reference from
        # Lua back to this object would be a cycle Python's collector cannot see.
        self._flag = flag = [False]

        def raise_flag() -> None:
            flag[0] = True
        self._alarm = bool(runtime.eval(_NEW_GLOBAL_ALARM)(raise_flag))

    def may_have_new_global(self) -> bool:
        """False when no global name can have appeared since the last time this said True."""
        if not self._alarm:
            return bool(self.has_new_global())
        seen, self._flag[0] = self._flag[0], False
        return seen

    def execute(self, code: str | bytes, *args: Any) -> Any:
        """Run ``code`` as ``LuaRuntime.execute`` does, from its compiled chunk when cached."""
        if code in _GC:
            return None  # Lua's incremental collector reclaims KEYS and ARGV in time
        chunk = self.chunks.get(code)
        if chunk is None:
            if len(self.chunks) >= MAX_CHUNKS:
                self.chunks.clear()
            try:
                chunk = self.runtime.compile(code)
            except Exception:  # let execute raise it, worded as fakeredis words it
                return self.runtime.execute(code, *args)
            self.chunks[code] = chunk
        result = chunk(*args)
        if self._alarm and not self._flag[0] and self.has_new_global():
            self._flag[0] = True  # created without the metamethod (rawset): fakeredis' check reports it
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runtime, name)


def compile_once(client: redis.Redis) -> bool:
    """Make ``client``'s server compile each Lua script once and check for new globals in Lua
    (see the module docstring). Idempotent; False for a client of a real server, or a fakeredis
    that keeps its Lua interpreter elsewhere."""
    server = client.connection_pool.connection_kwargs.get("server")
    if server is None:
        return False
    if not isinstance(getattr(server, "_lua_runtime", None), CompiledChunks):
        client.eval("return 1", 0)  # fakeredis builds the interpreter on the first script
        runtime = getattr(server, "_lua_runtime", None)
        expected = getattr(server, "_lua_expected_globals", None)
        if runtime is None or not hasattr(runtime, "compile") or not isinstance(expected, set):
            return False
        server._lua_runtime = CompiledChunks(runtime, expected)
        _lua_checked[id(expected)] = weakref.ref(server._lua_runtime)
        weakref.finalize(server, _lua_checked.pop, id(expected), None)
        _install_globals_check()
    return True


#: Servers whose new-globals check runs in Lua, by the id of their expected-globals set.
_lua_checked: dict[int, weakref.ref[CompiledChunks]] = {}


def _install_globals_check() -> None:
    """Put :func:`_check_for_lua_globals` in front of fakeredis' own, once (it answers for the
    servers of :data:`_lua_checked` and hands every other server to fakeredis)."""
    stock = getattr(scripting_mixin, "_check_for_lua_globals", None)
    if stock is None or getattr(stock, "stock", None) is not None:
        return  # not this fakeredis, or installed already

    def check(lua_runtime: Any, expected_globals: set[Any]) -> None:
        ref = _lua_checked.get(id(expected_globals))
        chunks = ref() if ref is not None else None
        if chunks is not None and chunks.expected_globals is expected_globals \
                and not chunks.may_have_new_global():
            return
        stock(lua_runtime, expected_globals)

    check.stock = stock  # type: ignore[attr-defined]
    scripting_mixin._check_for_lua_globals = check


def hand_over(client: redis.Redis) -> bool:
    """Let every Wire built on ``client`` (a broker's, see :mod:`broker.wire`) give commands to
    its fake server as words instead of RESP bytes. False for a client whose connections are
    not fakeredis' (nothing changes then).

    >>> import fakeredis
    >>> from broker import Broker
    >>> from model.message import TaskMessage
    >>> client = fakeredis.FakeRedis()
    >>> hand_over(client)
    True
    >>> Broker(client).enqueue(TaskMessage(type="t", payload=None, id="t1", queue="q"))
    >>> sorted(client.keys())
    [b'asynq:queues', b'asynq:{q}:pending', b'asynq:{q}:t:t1']
    """
    if not callable(getattr(client.connection_pool.connection_class, "get_socket", None)):
        return False
    hand_over_to(client, _process_words)
    return True


def _process_words(conn: Any, words: list[bytes]) -> None:
    """Run one command on the fake socket of ``conn`` as its RESP parser would (the reply
    is queued for ``conn.read_response``); a socket this does not recognise, or a closed
    or killed one, gets the RESP bytes, so fakeredis answers as it always does."""
    sock = conn.get_socket()
    process = getattr(sock, "_process_command", None)
    server = getattr(sock, "_server", None)
    if process is None or not getattr(server, "connected", False) \
            or getattr(sock, "_killed", False):
        conn.send_packed_command([pack_command(tuple(words))], check_health=False)
        return
    process(words)


def new_client() -> fakeredis.FakeRedis:
    """A fakeredis client on its own server, compiling each script once as Redis does and
    taking the broker's commands as words."""
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
    compile_once(client)
    hand_over(client)
    return client


# --- reading a server's memory ----------------------------------------------------------------


def database(client: Any) -> Any | None:
    """The fakeredis database ``client`` talks to (key → item with ``value`` and ``expireat``),
    or None for a client of a real server or a fakeredis laid out otherwise."""
    if not isinstance(client, fakeredis.FakeRedis):
        return None
    try:
        where = client.connection_pool.connection_kwargs
        db = where["server"].dbs[where.get("db") or 0]
        db.items()
    except (AttributeError, KeyError, TypeError):
        return None
    return db


def snapshot_from_memory(sut: Any, queue: str) -> KeyspaceSnapshot | None:
    """``sut.snapshot(queue)`` read from a fakeredis server's memory; None when ``sut`` is not a
    Broker on fakeredis or the store looks unfamiliar (the caller then asks Redis).

    The entries go through the broker's own decoder in the shape the snapshot script replies
    with, so the result is the same snapshot (tests/test_bench_machine.py checks it).
    """
    client = getattr(sut, "client", None)
    if not isinstance(sut, Broker) or not isinstance(client, fakeredis.FakeRedis):
        return None
    try:
        where = client.connection_pool.connection_kwargs
        store = where["server"].dbs[where.get("db") or 0]._dict
        prefix = keys.queue_prefix(queue).encode()
        now_ms = sut.now_ms
        raw = []
        for key, item in list(store.items()):
            if key.startswith(prefix):
                entry = _reply_entry(key, item.value, item.expireat, now_ms)
                if entry is not None:
                    raw.append(entry)
        registry = store.get(keys.ALL_QUEUES.encode())
        registered = registry is not None and queue.encode() in registry.value
        entries = {entry.key: entry for entry in map(sut._entry, raw)}
    except (AttributeError, KeyError, TypeError):
        return None
    return KeyspaceSnapshot(queue, now_ms, entries, registered=registered)


def _reply_entry(key: bytes, value: Any, expire_at_s: float | None,
                 now_ms: int) -> list[Any] | None:
    """One key in the snapshot script's reply shape, or None when its virtual TTL passed."""
    at = -1
    if expire_at_s is not None:
        at = decode_deadline(round(expire_at_s * 1000))
        if at <= now_ms:
            return None
    if isinstance(value, bytes):
        return [key, b"string", at, [value]]
    if isinstance(value, list):
        return [key, b"list", at, list(value)]
    if hasattr(value, "_bylex"):
        return [key, b"zset", at, [x for m, sc in value._bylex.items() for x in (m, sc)]]
    if hasattr(value, "getall"):
        return [key, b"hash", at, [x for f, v in value.getall().items() for x in (f, v)]]
    return [key, b"set", at, list(value)]


def memory_image(db: Any) -> dict[bytes, Hashable]:
    """Every key of ``db`` (see :func:`database`) with its expiry and value as plain hashable
    data: equal images, equal databases (a value it cannot describe never compares equal)."""
    return {name: (item.expireat, _canon(item.value)) for name, item in db.items()}


class _Opaque:
    """A value the image cannot describe: equal to nothing, so its key always counts as changed."""


def _canon(value: Any) -> Hashable:
    """A fakeredis value as plain hashable data (bytes, list, set, zset, hash)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, list):
        return ("list", tuple(value))
    kind = getattr(value, "_model_type", None)
    if kind in (b"zset", b"hash"):
        return (kind, frozenset(value.items()))
    if kind == b"set":
        return (kind, frozenset(value))
    return _Opaque()
