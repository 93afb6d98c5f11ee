"""The body of ``keysim audit``: connect read-only, audit, print, write the fix plan, exit code.

Exit codes: 0 clean, 1 findings, 2 cannot connect or not permitted (message on stderr).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

import redis

from audit.engine import AuditOptions, audit
from audit.plan import PlanError, ServerIdentity, build_plan, how_to_run, server_identity, write_plan
from audit.readonly import AuditUnavailable, WriteRefused, connect, masked, password_from_env
from audit.report import render_text, to_json
from broker.servers import mask_url

EXIT_CLEAN, EXIT_FINDINGS, EXIT_UNAVAILABLE = 0, 1, 2


def run_audit(url: str, options: AuditOptions, *, as_json: bool = False,
              fix_plan_path: Path | None = None, out: TextIO | None = None,
              err: TextIO | None = None) -> int:
    """Audit ``url`` and return the exit code; output goes to ``out``/``err`` (default stdio)."""
    out, err = out or sys.stdout, err or sys.stderr
    target = mask_url(url)
    secret = password_from_env()
    try:
        client = connect(url)
    except (ValueError, AuditUnavailable) as e:
        print(f"keysim audit: {masked(str(e), secret)}", file=err)
        return EXIT_UNAVAILABLE
    identity: ServerIdentity | None = None
    try:
        result = audit(client, options)
        if fix_plan_path is not None:  # a plan names its server: INFO's run_id
            identity = server_identity(client, url)
    except redis.exceptions.NoPermissionError as e:
        print(f"keysim audit: not permitted on {target}: {masked(str(e), secret)} "
              "(the user needs +@read -@write -@dangerous +multi +exec +select; "
              "+eval_ro makes the audit several times faster)", file=err)
        return EXIT_UNAVAILABLE
    except (redis.RedisError, OSError, WriteRefused, PlanError) as e:
        print(f"keysim audit: {target}: {masked(str(e), secret)}", file=err)
        return EXIT_UNAVAILABLE
    finally:
        client.close()
    out.write(to_json(result, target) + "\n" if as_json else render_text(result, target))
    if fix_plan_path is not None and identity is not None:
        plan = build_plan(result, identity, target)
        write_plan(plan, fix_plan_path)
        print(f"wrote fix plan {fix_plan_path}: {len(plan.actions)} guarded deletion(s), not executed "
              f"(run it: {how_to_run(fix_plan_path)})", file=err)
    return EXIT_FINDINGS if result.findings else EXIT_CLEAN
