"""The body of ``keysim audit``: connect read-only, audit, print, write the fix plan, exit code.

Exit codes: 0 clean, 1 findings, 2 usage or connection error (an unusable URL, a refused
connection or credentials, a read the audit cannot do without, an unknown ``--queue``; one
line on stderr, the password masked), 3 incomplete: no finding, but some key could not be
verified (a read refused; the report says which and why).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import redis

from audit.acl import recipe
from audit.cluster import NO_CLUSTER_PLAN, audit_cluster, cluster_masters, cluster_target
from audit.engine import AuditOptions, UnknownQueue, audit
from audit.plan import PlanError, ServerIdentity, build_plan, how_to_run, server_identity, write_plan
from audit.readonly import AuditUnavailable, WriteRefused, connect, masked, password_from_env
from audit.report import render_text, to_json
from broker.servers import mask_url

EXIT_CLEAN, EXIT_FINDINGS, EXIT_UNAVAILABLE, EXIT_INCOMPLETE = 0, 1, 2, 3


def run_audit(url: str, options: AuditOptions, *, as_json: bool = False,
              fix_plan_path: Path | None = None, out: TextIO | None = None,
              err: TextIO | None = None) -> int:
    """Audit ``url`` and return the exit code; output goes to ``out``/``err`` (default stdio)."""
    out, err = out or sys.stdout, err or sys.stderr
    target = mask_url(url)
    secret = password_from_env()

    def fail(message: str) -> int:
        print(f"keysim audit: {one_line(masked(message, secret))}", file=err)
        return EXIT_UNAVAILABLE

    try:
        client = connect(url)
    except (ValueError, AuditUnavailable) as e:
        return fail(str(e))
    identity: ServerIdentity | None = None
    try:
        masters = cluster_masters(client, url)  # [] for a single server
        if masters and fix_plan_path is not None:
            raise PlanError(f"Redis Cluster: {NO_CLUSTER_PLAN}")
        if masters:
            target = cluster_target(target, masters)
        result = audit_cluster(client, masters, options, err) if masters else audit(client, options)
        if fix_plan_path is not None:  # a plan names its server: INFO's run_id
            identity = server_identity(client, url)
    except UnknownQueue as e:
        return fail(f"{target}: {e}")
    except redis.exceptions.NoPermissionError as e:
        return fail(f"not permitted on {target}: {e} (the audit needs a user made with: {recipe()})")
    except (redis.RedisError, OSError, WriteRefused, PlanError, AuditUnavailable) as e:
        return fail(f"{target}: {e}")
    finally:
        client.close()
    out.write(to_json(result, target) + "\n" if as_json else render_text(result, target))
    if fix_plan_path is not None and identity is not None:
        plan = build_plan(result, identity, target)
        write_plan(plan, fix_plan_path)
        print(f"wrote fix plan {fix_plan_path}: {len(plan.actions)} guarded deletion(s), not executed "
              f"(run it: {how_to_run(fix_plan_path)})", file=err)
    return result.exit_code


def one_line(message: str) -> str:
    """``message`` on one line (a server error can span several).

    >>> one_line("ERR bad\\nthing  here")
    'ERR bad thing here'
    """
    return " ".join(message.split())
