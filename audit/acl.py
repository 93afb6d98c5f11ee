"""The ACL a Redis user needs to run ``keysim audit``, per read mode: one place for the error
message, ``keysim audit --help`` and the test that creates exactly this user.

The audit needs ``+@read`` (SCAN, TYPE, HMGET, LRANGE, ZRANGE, ZSCORE, LPOS, PTTL/PEXPIRETIME,
MEMORY USAGE, ...) on the ``asynq:`` keys, plus PING (redis-py checks the connection with it),
SELECT (a db other than 0) and INFO (to name the server). ``-@dangerous`` drops the ``@read``
commands that can stall a server (KEYS). Everything else is optional and only makes it faster
or its re-reads atomic:

>>> print(recipe())
ACL SETUSER keysim-audit on >PASSWORD ~asynq:* +@read -@dangerous +ping +select +info
>>> print(recipe(mode="script"))
ACL SETUSER keysim-audit on >PASSWORD ~asynq:* +@read -@dangerous +ping +select +info +multi +exec +eval_ro
"""

from __future__ import annotations

#: Rules every read mode needs.
BASE_RULES = "~asynq:* +@read -@dangerous +ping +select +info"
#: Extra rules per ``--reads`` mode: "pipeline" needs nothing more (candidates are re-read twice
#: with plain reads); MULTI/EXEC make the re-reads atomic; EVAL_RO (Redis ≥ 7.0) reads task
#: hashes several times faster.
MODE_RULES = {"pipeline": "", "atomic": "+multi +exec", "script": "+multi +exec +eval_ro"}


def rules(mode: str = "pipeline") -> str:
    """The rules (after ``on >PASSWORD``) for ``mode``: ``pipeline``, ``atomic`` or ``script``."""
    return " ".join(filter(None, (BASE_RULES, MODE_RULES[mode])))


def recipe(user: str = "keysim-audit", password: str = "PASSWORD", mode: str = "pipeline") -> str:
    """The ``ACL SETUSER`` command that creates a user fit for the audit's ``mode``."""
    return f"ACL SETUSER {user} on >{password} {rules(mode)}"


def help_text() -> str:
    """The ACL paragraph of ``keysim audit --help``."""
    return (f"ACL: the minimum is `{recipe()}` (every server from Redis 6.2; candidates are then "
            f"re-read twice, with a pause). Add `{MODE_RULES['atomic']}` for atomic re-reads and "
            "`+eval_ro` (Redis >= 7.0) for --reads script, several times faster: "
            f"`{rules('script')}`.")
