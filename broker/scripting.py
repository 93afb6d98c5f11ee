"""Loading the Lua scripts under ``broker/scripts``: prelude + quirk flags + script text.

Each script file starts with a header of ``--`` comment lines naming its KEYS and ARGV (a test
checks every KEYS[n] used is declared and that all of a call's keys share one Cluster slot).
The loader prepends ``local Q = {...}`` (the variant's quirk flags) and the definitions the
script uses from ``_prelude.lua`` and ``_clock.lua`` (the virtual time base, whose constants and
Python twins live here: :func:`encode_deadline`, :func:`decode_deadline`); the resulting text is
registered once per client and run by EVALSHA (re-sent on NOSCRIPT).
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster

from broker.variants import Quirk, Variant

SCRIPTS_DIR = Path(__file__).parent / "scripts"
PRELUDE = "_prelude"
#: The virtual time base's Lua helpers: drawn in like the prelude's, never mutated.
CLOCK = "_clock"
#: Scripts that find their keys by SCAN over one queue's prefix (their one KEY, the prefix, only
#: names the queue's Cluster slot): the harness's view of the keyspace and its clock, not Asynq
#: operations.
SCAN_SCRIPTS = frozenset({"snapshot", "sweep_expired"})
#: Virtual time (docs/reference-design.md "Time"): a key whose virtual deadline is ``d`` ms gets
#: ``PEXPIREAT TTL_SHIFT_MS + TTL_SCALE·d + TTL_CENTRE`` (:func:`encode_deadline`), far beyond any
#: real clock so Redis never expires it on its own. The scale and centre make the decoding exact
#: from a read up to 2 ms early or 1 ms late (:func:`decode_deadline`): Redis 6.2 has no
#: PEXPIRETIME, and TIME + PTTL is only accurate to a millisecond.
TTL_SHIFT_MS = 2_000_000_000_000
TTL_SCALE = 4
TTL_CENTRE = 2

Arg = str | bytes | int | float
#: A client the broker runs on: one server, or a Redis Cluster.
Client = redis.Redis | RedisCluster


def encode_deadline(deadline_ms: int) -> int:
    """The PEXPIREAT time (ms) that stores virtual deadline ``deadline_ms`` (the prelude's
    ``encode_deadline`` is the same function in Lua).

    >>> encode_deadline(1_767_225_600_000)
    9068902400002
    """
    return TTL_SHIFT_MS + TTL_SCALE * deadline_ms + TTL_CENTRE


def decode_deadline(at_ms: int) -> int:
    """The virtual deadline stored in expiry time ``at_ms``: the inverse of
    :func:`encode_deadline`, exact for a reading up to 2 ms early or 1 ms late (the prelude's
    ``decode_deadline`` is the same function in Lua).

    >>> at = encode_deadline(1_767_225_600_000)
    >>> {decode_deadline(at + error) for error in (-2, -1, 0, 1)}
    {1767225600000}
    """
    return (at_ms - TTL_SHIFT_MS - TTL_CENTRE + TTL_SCALE // 2) // TTL_SCALE


def is_shifted(at_ms: int) -> bool:
    """Whether expiry time ``at_ms`` lies in the virtual time base (beyond ``TTL_SHIFT_MS``, the
    year 2033) rather than on a real clock.

    >>> is_shifted(encode_deadline(0)), is_shifted(1_767_225_600_000)
    (True, False)
    """
    return at_ms > TTL_SHIFT_MS


def time_base_lua() -> list[str]:
    """The virtual time base's constants as Lua definitions: the prelude's encoding reads them,
    so its numbers are spelled here only."""
    return [f"local TTL_SHIFT_MS = {TTL_SHIFT_MS}", f"local TTL_SCALE = {TTL_SCALE}",
            f"local TTL_CENTRE = {TTL_CENTRE}"]


@cache
def script_text(name: str) -> str:
    """The text of ``scripts/<name>.lua``; raises FileNotFoundError naming the script."""
    path = SCRIPTS_DIR / f"{name}.lua"
    if not path.is_file():
        raise FileNotFoundError(f"no Lua script named {name!r} in {SCRIPTS_DIR}")
    return path.read_text()


def script_names() -> list[str]:
    """Every script in ``broker/scripts`` (the prelude and the clock excluded)."""
    return sorted(p.stem for p in SCRIPTS_DIR.glob("*.lua") if p.stem not in (PRELUDE, CLOCK))


def header(name: str) -> dict[str, list[str]]:
    """The KEYS and ARGV declared in a script's header comment, in order.

    >>> header("enqueue")["KEYS"][0].startswith("KEYS[1]")
    True
    """
    declared: dict[str, list[str]] = {"KEYS": [], "ARGV": []}
    for line in script_text(name).splitlines():
        if not line.startswith("--"):
            break
        m = re.match(r"--\s*(KEYS|ARGV)\[(\d+)\]\s*(.*)", line)
        if m:
            declared[m.group(1)].append(f"{m.group(1)}[{m.group(2)}] {m.group(3)}".strip())
    return declared


def full_source(name: str, variant: Variant) -> str:
    """Script text as sent to Redis: quirk flags, the prelude definitions the script uses, then
    the script.

    >>> from broker.variants import variant
    >>> source = full_source("extend_lease", variant("reference"))
    >>> "local function ok(" in source, "local function archive_trim(" in source
    (True, False)
    """
    return _source(name, variant.quirks)


@cache
def _source(name: str, quirks: frozenset[Quirk]) -> str:
    flags = ", ".join(f"{q.value} = {'true' if q in quirks else 'false'}" for q in Quirk)
    body = script_text(name)
    return "\n".join([f"local Q = {{{flags}}}", *_prelude_needed_by(body), body])


_TOP_LEVEL = re.compile(r"^local (?:function )?(\w+)")


@cache
def prelude_definitions() -> dict[str, str]:
    """The prelude's top-level definitions by name, in order, comments left out: a
    ``local function`` up to its closing ``end`` at column 0, or a one-line ``local X = ...``;
    the time base's constants (:func:`time_base_lua`) and ``_clock.lua``'s helpers come first."""
    definitions: dict[str, str] = {}
    lines = [*time_base_lua(), *script_text(CLOCK).splitlines(), *script_text(PRELUDE).splitlines()]
    i = 0
    while i < len(lines):
        m = _TOP_LEVEL.match(lines[i])
        if not m:
            i += 1
            continue
        end = i
        if lines[i].startswith("local function"):
            end = next(j for j in range(i, len(lines)) if lines[j] == "end")
        definitions[m.group(1)] = "\n".join(lines[i:end + 1])
        i = end + 1
    return definitions


def with_prelude(text: str) -> str:
    """Lua ``text`` preceded by the prelude definitions it uses (no quirk flags): for scripts
    outside ``broker/scripts`` that read or write virtual deadlines.

    >>> "local function decode_deadline(" in with_prelude("return decode_deadline(ARGV[1])")
    True
    """
    return "\n".join([*_prelude_needed_by(text), text])


@cache
def _read_deadlines_source() -> str:
    """Every KEY's virtual deadline (the prelude's reader), or nil without a TTL or key."""
    return with_prelude("""
local out = {}
for i, key in ipairs(KEYS) do
    local deadline = virtual_deadline(key)
    if deadline == nil then deadline = false end
    out[i] = deadline
end
return out
""")


def read_deadlines(client: Client, names: Sequence[bytes | str]) -> list[int | None]:
    """The virtual deadline of each key in ``names`` (None: no TTL, or no key), read by the
    prelude's ``virtual_deadline`` in one script call: exact on every server, Redis 6.2 (no
    PEXPIRETIME) included. On a cluster the keys must share a slot (one queue's keys do)."""
    if not names:
        return []
    replies = client.eval(_read_deadlines_source(), len(names), *names)
    return [None if d is None else int(d) for d in replies]


def _prelude_needed_by(text: str) -> list[str]:
    """The prelude definitions ``text`` refers to, with theirs, in prelude order. Sending only
    these keeps every script small: fakeredis compiles the whole text on every call."""
    definitions = prelude_definitions()
    needed: set[str] = set()
    pending = [text]
    while pending:
        words = set(re.findall(r"\w+", pending.pop()))
        for name in words & definitions.keys() - needed:
            needed.add(name)
            pending.append(definitions[name])
    return [body for name, body in definitions.items() if name in needed]


#: Scripts sent (name -> SHA1) by client, then by the quirk set that selects their text.
_SENT: weakref.WeakKeyDictionary[Client, dict[frozenset[Quirk], dict[str, str]]] = \
    weakref.WeakKeyDictionary()


class ScriptRunner:
    """Queues named scripts of one variant, for one Redis client, on a pipeline: a script's
    text is loaded once (SCRIPT LOAD), then only its SHA1 is sent (EVALSHA) — so a fresh
    database never pays for a NOSCRIPT answer and a reload."""

    def __init__(self, client: Client, variant: Variant,
                 sent: dict[str, str] | None = None) -> None:
        self._client = client
        self._variant = variant
        self._sha: dict[str, str] = {} if sent is None else sent  # scripts sent: name -> SHA1

    @classmethod
    def shared(cls, client: Client, variant: Variant) -> ScriptRunner:
        """A runner that knows which of ``variant``'s scripts ``client`` has sent already:
        brokers built one after another on one client (one per example of the stateful
        machine) send each script's text once, not once per broker.

        >>> import fakeredis
        >>> from broker import calls
        >>> from broker.variants import variant
        >>> client = fakeredis.FakeRedis()
        >>> first, pipe = ScriptRunner.shared(client, variant("reference")), client.pipeline()
        >>> first.queue_on(pipe, *calls.pause("q", now_ns=1))
        >>> pipe.execute() == [[b"OK"]]
        True
        >>> list(ScriptRunner.shared(client, variant("reference"))._sha)
        ['pause']
        """
        sent = _SENT.setdefault(client, {}).setdefault(variant.quirks, {})
        return cls(client, variant, sent)

    def queue_on(self, pipe: Any, name: str, keys: Sequence[str], args: Sequence[Arg] = ()
                 ) -> None:
        """Queue script ``name`` on the pipeline ``pipe`` as an EVALSHA (the script is loaded
        first, once, if this client has not sent it). Should the server have lost it since,
        the pipeline raises NoScriptError: call :meth:`forget` and run the pipeline again."""
        sha = self._sha.get(name)
        if sha is None:
            sha = self._sha[name] = str(self._client.script_load(full_source(name, self._variant)))
        pipe.evalsha(sha, len(keys), *keys, *args)

    def forget(self) -> None:
        """Assume the server has none of the scripts (after a NoScriptError)."""
        self._sha.clear()
