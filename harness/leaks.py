"""What a failed check raises: :class:`LeakFound`, one subclass per check.

A failure says which check caught it (``invariant``: ``I1``…``I14``, ``agreement`` or
``drain``), what it found (``kind``: the first violation's :class:`model.invariants.Kind`, or a
:class:`Disagreement` of the machine's own checks) and which keys it is about, so that
:mod:`harness.attribution` never needs to read the message.

>>> found = leak("I7", "orphan group: g:g0 holds 1 task(s)", kind=Kind.ORPHAN_GROUP)
>>> type(found).__name__, found.invariant, found.kind, found.bug
('LeakFound_I7', 'I7', <Kind.ORPHAN_GROUP: 'orphan group'>, None)
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from enum import StrEnum

from model.invariants import Kind, Violation
from model.snapshot import KeyspaceSnapshot


class Disagreement(StrEnum):
    """What the machine's own checks find, beside the invariants: the broker and the model
    disagree (``agreement``), or keys outlive the drain (``drain``)."""

    ANSWER_DIFFERS = "answer differs"  # an operation answered otherwise than the model
    KEYSPACE_DIFFERS = "keyspace differs"  # the keyspace after a step is not the model's
    ENDING_DIFFERS = "ending differs"  # a worker's run ended in another operation than the model's
    SURVIVED_DRAIN = "survived the drain"  # keys beyond the baseline after the drain
    REMOVE_QUEUE_LEFT_KEYS = "remove_queue left keys"  # the queue's removal left keys behind
    RUNAWAY = "operation did not end"  # a composite's loop kept calling scripts without end

    @property
    def check(self) -> str:
        """The check that finds it: ``agreement`` or ``drain``."""
        return "drain" if self in (Disagreement.SURVIVED_DRAIN,
                                   Disagreement.REMOVE_QUEUE_LEFT_KEYS) else "agreement"


class LeakFound(AssertionError):
    """An invariant broke, the broker disagreed with the model, or the drain left keys behind.

    ``invariant`` names the check: ``I1``…``I14``, ``agreement`` or ``drain``; ``kind`` what
    it found (None only for a failure raised without one); ``keys`` the keys it is about.
    """

    def __init__(self, invariant: str, message: str, detail: str = "", *,
                 kind: Kind | Disagreement | None = None, keys: Collection[str] = (),
                 task_id: str | None = None) -> None:
        super().__init__(f"[{invariant}] {message}" + (f"\n{detail}" if detail else ""))
        self.invariant = invariant
        self.message = message
        self.detail = detail
        self.kind = kind
        self.keys = frozenset(keys)
        self.task_id = task_id
        #: The defect (``BZ-n``) :func:`harness.attribution.attribute` recognises in it, when it does.
        self.bug: str | None = None


def violation_leak(violations: list[Violation], snap: KeyspaceSnapshot) -> LeakFound:
    """The LeakFound of the first of ``violations``, all of them and the keyspace as detail."""
    first = violations[0]
    detail = "\n".join(f"  {v.invariant} {v.key}: {v.message}" for v in violations)
    keyspace = "\n".join(f"  {e.key}: {e.describe()}" for e in snap)
    return leak(first.invariant, first.message, f"{detail}\n keyspace:\n{keyspace}",
                kind=first.kind, keys={first.key}, task_id=first.task_id)


def disagreement_leak(kind: Disagreement, message: str, detail: str = "",
                      keys: Collection[str] = ()) -> LeakFound:
    """The LeakFound of one of the machine's own checks (``agreement`` or ``drain``)."""
    return leak(kind.check, message, detail, kind=kind, keys=keys)


@functools.cache
def leak_class(invariant: str) -> type[LeakFound]:
    """A LeakFound subclass per invariant, so Hypothesis reports distinct defects separately."""
    return type(f"LeakFound_{invariant}", (LeakFound,), {})


def leak(invariant: str, message: str, detail: str = "", *,
         kind: Kind | Disagreement | None = None, keys: Collection[str] = (),
         task_id: str | None = None) -> LeakFound:
    """A LeakFound of the class of ``invariant``."""
    return leak_class(invariant)(invariant, message, detail, kind=kind, keys=keys,
                                 task_id=task_id)
