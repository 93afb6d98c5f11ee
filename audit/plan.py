"""The fix plan of ``keysim audit``: what to delete, where, and what must still hold.

A plan is JSON (``--fix-plan FILE``): the server it was made on (``run_id``, address, db), when,
and one *action* per leak: the key, the finding's kind, and the guard that re-checks, atomically
and at deletion time, that the key is still that leak (:data:`GUARDS`; the Lua in
``audit/scripts``). ``keysim audit --apply PLAN`` runs the guards (:mod:`audit.apply`).
``--fix-plan FILE.redis`` writes the same plan as a script ``redis-cli`` runs as is: ``SELECT``
of the plan's db, one ``SCRIPT LOAD`` per guard, then one ``EVALSHA`` per action; every guard
refuses (an error reply, nothing deleted) on a server with another ``run_id``.

>>> sorted(GUARDS["zombie"].kinds)
['zombie']
>>> load_plan('{"format": "keysim-audit-plan", "version": 1}')
Traceback (most recent call last):
...
audit.plan.PlanError: not a valid plan: 'server' is missing
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis

from audit.engine import AuditResult, Finding
from model import keys
from model.invariants import INDEX_FAMILIES, Family, classify

FORMAT = "keysim-audit-plan"
VERSION = 1
SCRIPTS = Path(__file__).parent / "scripts"
#: Suffix of ``--fix-plan`` files written as a redis-cli script instead of JSON.
REDIS_CLI_SUFFIX = ".redis"


class PlanError(ValueError):
    """A plan that cannot be read, or whose content is not what ``--fix-plan`` writes."""


@dataclass(frozen=True)
class ServerIdentity:
    """The server a plan is for: ``run_id`` and ``db`` are checked before anything is touched."""

    run_id: str
    db: int
    address: str = ""
    server: str = ""


@dataclass(frozen=True)
class Action:
    """One guarded deletion. ``task_id``: the task id (zombie, stub, dangling id) or the lock's
    value at audit time (locks); "" when the guard needs none."""

    queue: str
    key: str
    kind: str
    invariant: str
    task_id: str = ""
    bytes: int = 0
    message: str = ""

    @property
    def guard(self) -> Guard:
        """The guard of this action's kind (a loaded plan names only kinds that have one)."""
        return GUARD_OF_KIND[self.kind]


@dataclass(frozen=True)
class Plan:
    """A fix plan: where it was made, when, and its actions in the audit's order."""

    server: ServerIdentity
    written_at: str
    target: str = ""
    actions: tuple[Action, ...] = ()
    #: Findings no guard can fix by a deletion (a repair is needed), as (queue, invariant, kind,
    #: key, message): listed for the operator, never acted on.
    not_planned: tuple[tuple[str, str, str, str, str], ...] = ()


@dataclass(frozen=True)
class Guard:
    """How one kind of leak is re-checked: the script ``audit/scripts/<name>.lua``, what it
    requires (stated in every action of the plan), its KEYS and ARGV for an action, and which
    keys of the queue it may be given (a plan naming any other key is refused)."""

    name: str
    kinds: frozenset[str]
    requires: str
    keys: Callable[[Action], list[str]]
    args: Callable[[Action], list[str]] = lambda a: []
    accepts: Callable[[Action], bool] = lambda a: True
    needs_id: bool = False

    @property
    def source(self) -> str:
        """The script as sent: the shared prelude, then this guard's body."""
        return _source(self.name)

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


@cache
def _source(name: str) -> str:
    prelude = (SCRIPTS / "_prelude.lua").read_text(encoding="utf-8")
    return prelude + "\n" + (SCRIPTS / f"{name}.lua").read_text(encoding="utf-8")


def _family(action: Action) -> Family | None:
    info = classify(action.queue, action.key) if keys.queue_of(action.key) == action.queue else None
    return info.family if info is not None else None


def _is_task_key(a: Action) -> bool:
    return a.key == keys.task(a.queue, a.task_id)


def _live_indexes(q: str) -> list[str]:
    """The keys that make a queue live (the audit's definition: work a server still does)."""
    return [keys.pending(q), keys.active(q), keys.lease(q), keys.scheduled(q), keys.retry(q)]


GUARDS = {g.name: g for g in (
    Guard("zombie", frozenset({"zombie"}),
          "the task hash exists, has no TTL, and its id is in none of pending, active, lease, "
          "scheduled, retry, archived, completed, the zset of its group, or any set in "
          "aggregation_sets",
          keys=lambda a: [a.key, *_live_indexes(a.queue), keys.archived(a.queue), keys.completed(a.queue),
                          keys.aggregation_sets(a.queue)],
          args=lambda a: [a.task_id, keys.group_prefix(a.queue)], accepts=_is_task_key, needs_id=True),
    Guard("stub", frozenset({"stub", "result-only hash"}),
          "the task hash exists and still lacks its msg or state field",
          keys=lambda a: [a.key], accepts=_is_task_key, needs_id=True),
    Guard("stale_lock", frozenset({"orphan lock"}),
          "the lock still holds the same owner id, and the owner's hash is absent, completed, or "
          "names another lock",
          keys=lambda a: [a.key, keys.task(a.queue, a.task_id)], args=lambda a: [a.task_id],
          accepts=lambda a: _family(a) is Family.UNIQUE, needs_id=True),
    Guard("lock_without_ttl", frozenset({"lock without ttl"}),
          "the lock still holds the same value and still has no TTL",
          keys=lambda a: [a.key], args=lambda a: [a.task_id],
          accepts=lambda a: _family(a) is Family.UNIQUE),
    Guard("counter_without_ttl", frozenset({"counter without ttl"}),
          "the daily counter is still a string without TTL",
          keys=lambda a: [a.key],
          accepts=lambda a: _family(a) in (Family.PROCESSED_DAILY, Family.FAILED_DAILY)),
    Guard("leftover", frozenset({"unregistered leftover"}),
          "the queue is still not in asynq:queues and still has no pending, active, lease, "
          "scheduled or retry key",
          keys=lambda a: [a.key, keys.ALL_QUEUES, *_live_indexes(a.queue)], args=lambda a: [a.queue],
          accepts=lambda a: a.key.startswith(keys.queue_prefix(a.queue))),
    Guard("dangling", frozenset({"dangling id"}),
          "the task hash still does not exist and the index still holds the id (only the id is "
          "removed from that index)",
          keys=lambda a: [a.key, keys.task(a.queue, a.task_id)], args=lambda a: [a.task_id],
          accepts=lambda a: _family(a) in INDEX_FAMILIES, needs_id=True),
)}
#: The finding kinds a plan can act on. Any other finding is listed in the plan, never acted on.
GUARD_OF_KIND = {kind: g for g in GUARDS.values() for kind in g.kinds}


# --- making a plan ---------------------------------------------------------------------------
def server_identity(client: redis.Redis, url: str) -> ServerIdentity:
    """Who ``client`` talks to: INFO's run_id and server version, the db, and the URL's address.
    :class:`PlanError` when INFO is refused: a plan must name its server."""
    try:
        info = client.info("server")
    except redis.exceptions.NoPermissionError as err:
        raise PlanError(f"cannot write a fix plan: INFO is refused ({err}); a plan names its "
                        "server's run_id, so the user needs +info") from None
    name = str(info.get("server_name") or "redis")
    version = str(info.get(f"{name}_version") or info.get("redis_version") or "")
    parts = urlsplit(url)
    address = parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
    db = int(client.connection_pool.connection_kwargs.get("db") or 0)
    return ServerIdentity(str(info["run_id"]), db, address, f"{name} {version}".strip())


def build_plan(result: AuditResult, identity: ServerIdentity, target: str = "",
               now: dt.datetime | None = None) -> Plan:
    """The plan for ``result``: one action per key (or per index entry) a guard can fix."""
    actions: dict[tuple[str, str], Action] = {}
    others = []
    for report in result.queues:
        for f in report.findings:
            guard = GUARD_OF_KIND.get(f.kind)
            if guard is None or not (f.leaked or guard.name == "dangling"):
                others.append((report.queue, f.invariant, f.kind, f.key, f.message))
                continue
            target_of = (f.key, f.task_id or "") if guard.name == "dangling" else (f.key, "")
            actions.setdefault(target_of, _action(report.queue, f))
    if result.registries is not None:  # global keys: reported for the operator, no guard yet
        others += [("", f.invariant, f.kind, f.key, f.message) for f in result.registries.findings]
    when = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return Plan(identity, when, target, tuple(actions.values()), tuple(others))


def _action(queue: str, f: Finding) -> Action:
    return Action(queue, f.key, f.kind, f.invariant, f.task_id or "", f.bytes, f.message)


def to_json(plan: Plan) -> str:
    doc = {
        "format": FORMAT, "version": VERSION, "server": asdict(plan.server),
        "target": plan.target, "written_at": plan.written_at,
        "actions": [{**asdict(a), "guard": a.guard.name, "requires": a.guard.requires}
                    for a in plan.actions],
        "not_planned": [dict(zip(("queue", "invariant", "kind", "key", "message"), o, strict=True))
                        for o in plan.not_planned],
    }
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def to_redis_cli(plan: Plan) -> str:
    """The plan as lines ``redis-cli`` runs as is (no comments: redis-cli would send them)."""
    s = plan.server
    lines = [f"SELECT {s.db}",
             "ECHO " + quote(f"keysim audit fix plan for {plan.target or s.address} db {s.db} "
                             f"(run_id {s.run_id}), written {plan.written_at}: {len(plan.actions)} "
                             "guarded deletion(s); each answers deleted, skipped and why, or gone")]
    used = {a.guard.name: a.guard for a in plan.actions}
    lines += [f"SCRIPT LOAD {quote(g.source)}" for g in used.values()]
    for a in plan.actions:
        lines.append(" ".join(["EVALSHA", a.guard.sha, *script_call(a, s.run_id, dry=False)]))
    return "\n".join(lines) + "\n"


def script_call(a: Action, run_id: str, dry: bool) -> list[str]:
    """numkeys, KEYS and ARGV of ``a``'s guard, each quoted for redis-cli."""
    guard_keys = a.guard.keys(a)
    args = [run_id, "1" if dry else "0", *a.guard.args(a)]
    return [str(len(guard_keys)), *(quote(x) for x in (*guard_keys, *args))]


def quote(text: str) -> str:
    """``text`` as one redis-cli argument: double quotes, ``\\xHH`` for anything unprintable.

    >>> print(quote('asynq:{q}:t:a"b\\n'))
    "asynq:{q}:t:a\\"b\\x0a"
    """
    out = []
    for byte in text.encode("utf-8", "surrogateescape"):
        ch = chr(byte)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 0x20 <= byte < 0x7F:
            out.append(ch)
        else:
            out.append(f"\\x{byte:02x}")
    return '"' + "".join(out) + '"'


def write_plan(plan: Plan, path: Path) -> None:
    """``path`` gets the redis-cli form when it ends in ``.redis``, else JSON."""
    text = to_redis_cli(plan) if path.suffix == REDIS_CLI_SUFFIX else to_json(plan)
    path.write_text(text, encoding="utf-8", errors="surrogateescape")


def how_to_run(path: Path) -> str:
    """The command that runs the plan written to ``path``."""
    if path.suffix == REDIS_CLI_SUFFIX:
        return f"redis-cli -h HOST -p PORT < {path}"
    return f"keysim audit REDIS_URL --apply {path} [--yes]"


# --- reading a plan --------------------------------------------------------------------------
def read_plan(path: Path) -> Plan:
    """Load the JSON plan at ``path``; :class:`PlanError` says what is wrong with it."""
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as err:
        raise PlanError(f"cannot read plan {path}: {err.strerror or err}") from None
    return load_plan(text)


def load_plan(text: str) -> Plan:
    """Parse and check a JSON plan: its format, server, and that every action names a known
    finding kind and a key that kind's guard may touch (a key of the action's queue)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        hint = " (a .redis plan is for redis-cli; --apply takes the JSON plan)" if text.startswith(
            "SELECT") else ""
        raise PlanError(f"not a valid plan: not JSON ({err}){hint}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise PlanError(f"not a valid plan: 'format' is not {FORMAT!r}")
    if doc.get("version") != VERSION:
        raise PlanError(f"not a valid plan: version {doc.get('version')!r}, this keysim reads {VERSION}")
    server = _field(doc, "server", dict, "")
    identity = ServerIdentity(_field(server, "run_id", str, "server."), _field(server, "db", int, "server."),
                              str(server.get("address", "")), str(server.get("server", "")))
    if not identity.run_id or identity.db < 0:
        raise PlanError("not a valid plan: server.run_id must be non-empty and server.db >= 0")
    actions = tuple(_load_action(n, raw) for n, raw in enumerate(_field(doc, "actions", list, "")))
    return Plan(identity, str(doc.get("written_at", "")), str(doc.get("target", "")), actions)


_A = {int: "an integer", str: "a string", dict: "an object", list: "a list"}


def _field(doc: dict[str, Any], name: str, kind: type, where: str) -> Any:
    if name not in doc:
        raise PlanError(f"not a valid plan: '{where}{name}' is missing")
    value = doc[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise PlanError(f"not a valid plan: '{where}{name}' must be {_A[kind]}, got {value!r:.60}")
    return value


def _load_action(n: int, raw: object) -> Action:
    where = f"actions[{n}]."
    if not isinstance(raw, dict):
        raise PlanError(f"not a valid plan: actions[{n}] must be an object")
    fields = {name: _field(raw, name, str, where) for name in ("queue", "key", "kind", "invariant")}
    task_id = raw.get("task_id") or ""
    if not isinstance(task_id, str):
        raise PlanError(f"not a valid plan: '{where}task_id' must be a string")
    nbytes = raw.get("bytes", 0)
    action = Action(**fields, task_id=task_id, bytes=nbytes if isinstance(nbytes, int) else 0,
                    message=str(raw.get("message", "")))
    guard = GUARD_OF_KIND.get(action.kind)
    if guard is None:
        raise PlanError(f"not a valid plan: {where}kind {action.kind!r} has no guard "
                        f"(known: {', '.join(sorted(GUARD_OF_KIND))})")
    try:
        keys.validate_name("queue", action.queue)
    except ValueError as err:
        raise PlanError(f"not a valid plan: {where}queue: {err}") from None
    if (guard.needs_id and not task_id) or not guard.accepts(action):
        raise PlanError(f"not a valid plan: {where}key {action.key!r} is not a key the "
                        f"{action.kind!r} guard may delete in queue {action.queue!r}"
                        + (" with task_id " + repr(task_id) if guard.needs_id else ""))
    return action

