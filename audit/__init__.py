"""``keysim audit``: a read-only audit of a live Redis for leaked Asynq keys.

>>> from audit import AuditOptions
>>> AuditOptions().scan_count
1000
"""

from audit.engine import AuditOptions, AuditResult, Finding, QueueReport, audit
from audit.readonly import AuditUnavailable, WriteRefused, connect
from audit.report import render_text, to_json

__all__ = ["AuditOptions", "AuditResult", "AuditUnavailable", "Finding", "QueueReport",
           "WriteRefused", "audit", "connect", "render_text", "to_json"]
