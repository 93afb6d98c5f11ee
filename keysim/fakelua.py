"""Compile-once Lua for the fakeredis servers the stateful machine runs on.

fakeredis runs every EVAL and EVALSHA by compiling the script's text again and then forcing a
full Lua garbage collection; real Redis compiles a script once and lets Lua's incremental
collector work. For the machine, which calls a dozen scripts thousands of times, that is a
third of its time. :func:`compile_once` gives one fakeredis server real Redis' habit: the
server's Lua interpreter is wrapped so that a script's text is compiled the first time and its
compiled chunk is called again after (running a chunk again runs the script afresh: its
``local`` state starts over each time), and the per-call ``collectgarbage()`` is left to Lua.
Everything else about EVAL — KEYS and ARGV, ``redis.call``, the globals check, error messages,
reply conversion — is fakeredis' own code, unchanged.

It relies on one private attribute of fakeredis (the server's ``_lua_runtime``); when a
fakeredis release no longer has it, :func:`compile_once` says so by returning False and leaves
the server as it was. tests/test_fakelua.py checks that scripts answer and write alike either way.

>>> import fakeredis
>>> client = fakeredis.FakeRedis(server=fakeredis.FakeServer())
>>> compile_once(client)
True
>>> client.eval("return redis.call('INCR', KEYS[1])", 1, "n"), client.eval(
...     "return redis.call('INCR', KEYS[1])", 1, "n")
(1, 2)
"""

from __future__ import annotations

from typing import Any

import redis

#: Distinct script texts remembered per server (the machine has a few dozen; the cap only
#: bounds memory for a caller sending endless one-off scripts).
MAX_CHUNKS = 1024

_GC = ("collectgarbage()", b"collectgarbage()")


class CompiledChunks:
    """A stand-in for a fakeredis server's ``LuaRuntime``: ``execute`` compiles each text once
    and skips the forced full collection; every other attribute is the runtime's own."""

    def __init__(self, runtime: Any) -> None:
        self.runtime = runtime
        self.chunks: dict[str | bytes, Any] = {}

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
        return chunk(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runtime, name)


def compile_once(client: redis.Redis) -> bool:
    """Make ``client``'s server compile each Lua script once (see the module docstring).
    Idempotent; False for a client of a real server, or a fakeredis that keeps its Lua
    interpreter elsewhere."""
    server = client.connection_pool.connection_kwargs.get("server")
    if server is None:
        return False
    if not isinstance(getattr(server, "_lua_runtime", None), CompiledChunks):
        client.eval("return 1", 0)  # fakeredis builds the interpreter on the first script
        runtime = getattr(server, "_lua_runtime", None)
        if runtime is None or not hasattr(runtime, "compile"):
            return False
        server._lua_runtime = CompiledChunks(runtime)
    return True
