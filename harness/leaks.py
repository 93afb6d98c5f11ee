"""What a failed check raises: :class:`LeakFound`, one subclass per check.

>>> found = leak("I7", "orphan group: g:g0 holds 1 task(s)")
>>> type(found).__name__, found.invariant, found.bug
('LeakFound_I7', 'I7', None)
"""

from __future__ import annotations

import functools

from model.invariants import Violation
from model.snapshot import KeyspaceSnapshot


class LeakFound(AssertionError):
    """An invariant broke, the broker disagreed with the model, or the drain left keys behind.

    ``invariant`` names the check: ``I1``…``I14``, ``agreement`` or ``drain``.
    """

    def __init__(self, invariant: str, message: str, detail: str = "") -> None:
        super().__init__(f"[{invariant}] {message}" + (f"\n{detail}" if detail else ""))
        self.invariant = invariant
        self.message = message
        self.detail = detail
        #: The defect (``BZ-n``) :func:`harness.attribution.attribute` recognises in it, when it does.
        self.bug: str | None = None



def violation_leak(violations: list[Violation], snap: KeyspaceSnapshot) -> LeakFound:
    """The LeakFound of the first of ``violations``, all of them and the keyspace as detail."""
    first = violations[0]
    detail = "\n".join(f"  {v.invariant} {v.key}: {v.message}" for v in violations)
    keyspace = "\n".join(f"  {e.key}: {e.describe()}" for e in snap)
    return leak(first.invariant, first.message, f"{detail}\n keyspace:\n{keyspace}")


@functools.cache
def leak_class(invariant: str) -> type[LeakFound]:
    """A LeakFound subclass per invariant, so Hypothesis reports distinct defects separately."""
    return type(f"LeakFound_{invariant}", (LeakFound,), {})


def leak(invariant: str, message: str, detail: str = "") -> LeakFound:
    """A LeakFound of the class of ``invariant``."""
    return leak_class(invariant)(invariant, message, detail)

