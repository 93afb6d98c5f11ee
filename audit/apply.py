"""``keysim audit REDIS_URL --apply PLAN [--yes]``: run a fix plan's guards (:mod:`audit.plan`).

Before anything else the server's ``run_id`` and the URL's db must be the plan's; otherwise
the plan is refused (exit 2) and nothing is sent but INFO. Each action is then one atomic
script (its guard) that re-checks that the key is still the leak the audit found and only then
deletes that one key (or removes that one id from its index). A dry run (the default) runs the
same guards with "dry" set: they report what they would do and write nothing. Every guard also
checks the run_id itself, so a restart between the check and the call refuses too.

Outcomes: ``deleted`` (``would delete`` when dry), ``skipped`` with the reason (the key is no
longer that leak: healed, moved, re-used), ``gone`` (already deleted by someone else).
Exit codes: 0 the plan ran (whatever the outcomes), 2 an unreadable plan, another server or db,
or no connection.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qs, urlsplit

import redis

from audit.cluster import NO_CLUSTER_PLAN
from audit.plan import Action, Plan, PlanError, read_plan
from audit.readonly import SCHEMES, masked, password_from_env
from broker.base import text
from broker.servers import mask_url

EXIT_APPLIED, EXIT_REFUSED = 0, 2
STATUSES = ("deleted", "would delete", "skipped", "gone")
#: Scripts sent per round trip (each one atomic on its own).
BATCH = 500
_REFUSED = "keysim plan refused"


class PlanRefused(Exception):
    """The plan is for another server or db (or the server restarted): nothing was changed."""


@dataclass(frozen=True)
class Outcome:
    action: Action
    status: str
    reason: str = ""


@dataclass
class ApplyReport:
    outcomes: list[Outcome]
    dry: bool

    def counts(self) -> Counter[str]:
        return Counter(o.status for o in self.outcomes)

    def summary(self) -> str:
        counts = self.counts()
        shown = [f"{s} {counts[s]}" for s in STATUSES if s != ("deleted" if self.dry else "would delete")]
        return ", ".join(shown)


def connect(url: str, *, env: dict[str, str] | None = None, timeout: float = 5.0) -> redis.Redis:
    """A plain (writable) client for ``url``, password as for the audit, checked by PING.
    ValueError for a malformed URL (the db must be an integer), ConnectionError when refused."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in SCHEMES:
        shown = mask_url(url) if isinstance(url, str) else repr(url)
        raise ValueError(f"REDIS_URL must start with redis://, rediss:// or unix://, got {shown!r}")
    db = parse_qs(parts.query).get("db", [parts.path.strip("/") if parts.scheme != "unix" else ""])[0]
    if db and not db.isdigit():
        raise ValueError(f"the db in {mask_url(url)} must be an integer, got {db!r}")
    password = parts.password or password_from_env(env)
    options: dict[str, Any] = {"socket_connect_timeout": timeout, "socket_timeout": timeout * 6}
    if password and not parts.password:
        options["password"] = password
    client = redis.Redis.from_url(url, **options)
    try:
        client.ping()
    except (redis.RedisError, OSError) as err:
        client.close()
        raise redis.ConnectionError(f"cannot use {mask_url(url)}: {masked(str(err), password)}") from None
    return client


def check_server(client: redis.Redis, plan: Plan) -> None:
    """Raise :class:`PlanRefused` unless ``client`` talks to the plan's server and db, and that
    server is no Redis Cluster node (see :data:`audit.cluster.NO_CLUSTER_PLAN`)."""
    if str(client.info("cluster").get("cluster_enabled")) == "1":
        raise PlanRefused(f"{NO_CLUSTER_PLAN}; nothing was changed")
    run_id = str(client.info("server").get("run_id", ""))
    db = int(client.connection_pool.connection_kwargs.get("db") or 0)
    made = plan.server
    where = f"{made.address or 'unknown address'}, {made.server or 'unknown server'}"
    if run_id != made.run_id:
        raise PlanRefused(f"the plan was made on another server (run_id {made.run_id}, {where}); "
                          f"this one has run_id {run_id or 'unknown'}: nothing was changed")
    if db != made.db:
        raise PlanRefused(f"the plan was made on db {made.db}, the URL selects db {db}: nothing was changed")


def apply_plan(client: redis.Redis, plan: Plan, *, execute: bool = False) -> ApplyReport:
    """Run every action's guard (``execute`` False: a dry run, nothing written)."""
    check_server(client, plan)
    scripts = {a.guard.name: client.register_script(a.guard.source) for a in plan.actions}
    dry = "0" if execute else "1"
    outcomes: list[Outcome] = []
    for start in range(0, len(plan.actions), BATCH):
        batch = plan.actions[start:start + BATCH]
        pipe = client.pipeline(transaction=False)
        for a in batch:
            scripts[a.guard.name](keys=[_raw(k) for k in a.guard.keys(a)],
                                  args=[_raw(x) for x in (plan.server.run_id, dry, *a.guard.args(a))],
                                  client=pipe)
        outcomes += [_outcome(a, reply) for a, reply in
                     zip(batch, pipe.execute(raise_on_error=False), strict=True)]
    return ApplyReport(outcomes, dry=not execute)


def _raw(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def _outcome(action: Action, reply: Any) -> Outcome:
    if isinstance(reply, Exception):
        if _REFUSED in str(reply):
            raise PlanRefused(f"{reply} (the server restarted?); the actions before "
                              f"{action.key!r} ran")
        return Outcome(action, "skipped", f"the guard failed: {reply}")
    status, reason = (text(x) for x in reply)
    return Outcome(action, status, reason)


def run_apply(url: str, plan_path: Path, *, execute: bool = False, as_json: bool = False,
              out: TextIO | None = None, err: TextIO | None = None) -> int:
    """``keysim audit URL --apply PLAN [--yes]``: the exit code; output to ``out``/``err``."""
    out, err = out or sys.stdout, err or sys.stderr
    target, secret = mask_url(url), password_from_env()
    try:
        plan = read_plan(plan_path)
        client = connect(url)
    except (PlanError, ValueError, redis.ConnectionError) as e:
        print(f"keysim audit --apply: {masked(str(e), secret)}", file=err)
        return EXIT_REFUSED
    try:
        report = apply_plan(client, plan, execute=execute)
    except PlanRefused as e:
        print(f"keysim audit --apply: refused on {target}: {e}", file=err)
        return EXIT_REFUSED
    except (redis.RedisError, OSError) as e:
        print(f"keysim audit --apply: {target}: {masked(str(e), secret)}", file=err)
        return EXIT_REFUSED
    finally:
        client.close()
    out.write(_json(report, plan_path) if as_json else _text(report, plan_path, target))
    return EXIT_APPLIED


def _text(report: ApplyReport, plan_path: Path, target: str) -> str:
    lines = [f"{o.status:<12} {o.action.kind:<21} {o.action.key}" + (f"  ({o.reason})" if o.reason else "")
             for o in report.outcomes]
    if report.dry:
        lines.append(f"dry run of {plan_path} on {target}: {report.summary()}; nothing was changed "
                     "(add --yes to apply)")
    else:
        lines.append(f"applied {plan_path} on {target}: {report.summary()}")
    return "\n".join(lines) + "\n"


def _json(report: ApplyReport, plan_path: Path) -> str:
    doc = {"plan": str(plan_path), "dry_run": report.dry, "counts": dict(report.counts()),
           "outcomes": [{"key": o.action.key, "kind": o.action.kind, "queue": o.action.queue,
                         "task_id": o.action.task_id, "status": o.status, "reason": o.reason}
                        for o in report.outcomes]}
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
