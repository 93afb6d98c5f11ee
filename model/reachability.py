"""Which (transition, outcome) pairs a run must reach: data beside the transition table.

Every pair the table declares (each row's :attr:`~model.transitions.Transition.outcomes`) is
demanded by the coverage stopping rule of ``keysim check``, unless an :class:`Exclusion` here
says why the design under test cannot produce it. Nothing is skipped silently: a pair is either
demanded or excluded with its reason.

The reference design reaches every pair of the table. A variant's quirks can make a pair
unreachable (Asynq's janitor never applies the archive cutoff, so its archive janitor never
deletes anything); :data:`QUIRK_EXCLUSIONS` lists those by the quirk's flag name (the values
of ``broker.variants.Quirk``; the model does not import the broker, a test holds the names to
the quirks).

>>> ("delete_expired_archived", "ok") in required_pairs()
True
>>> ("delete_expired_archived", "ok") in required_pairs({"lazy_cutoff"})
False
>>> exclusions({"lazy_cutoff"})[("delete_expired_archived", "ok")][:25]
'the janitor never applies'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from model.transitions import TRANSITIONS, Outcome

#: (transition name, outcome value), as the stateful machine counts them.
Pair = tuple[str, str]


@dataclass(frozen=True)
class Exclusion:
    """A declared pair that a design cannot produce, and why."""

    transition: str
    outcome: Outcome
    reason: str

    @property
    def pair(self) -> Pair:
        """The excluded (transition, outcome) pair."""
        return (self.transition, self.outcome.value)


def declared_pairs() -> tuple[Pair, ...]:
    """Every (transition, outcome) pair of the table, in table order."""
    return tuple((name, outcome.value) for name, row in TRANSITIONS.items()
                 for outcome in row.outcomes)


#: Pairs the reference design never produces. None: every pair of the table is reachable
#: (``tests/test_stateful.py`` holds the machine to reaching each one).
REFERENCE_EXCLUSIONS: tuple[Exclusion, ...] = ()

#: Pairs a quirk makes unreachable, by the quirk's flag name (``broker.variants.Quirk`` value).
QUIRK_EXCLUSIONS: Mapping[str, tuple[Exclusion, ...]] = MappingProxyType({
    "lazy_cutoff": (
        Exclusion("delete_expired_archived", Outcome.OK,
                  "the janitor never applies the archive cutoff (Asynq trims old archived "
                  "tasks only when it archives another), so it never deletes one"),
    ),
    "write_result_without_task": (
        Exclusion("write_result", Outcome.NOT_FOUND,
                  "write_result writes the result field without checking that the task "
                  "exists, so it never answers not found (BZ-18)"),
    ),
    "pause_unregistered": (
        Exclusion("pause", Outcome.QUEUE_NOT_FOUND,
                  "pause accepts a queue missing from asynq:queues (Asynq checks nothing)"),
        Exclusion("unpause", Outcome.QUEUE_NOT_FOUND,
                  "unpause accepts a queue missing from asynq:queues (Asynq checks nothing)"),
    ),
})


def exclusions(quirks: Iterable[str] = ()) -> dict[Pair, str]:
    """The excluded pairs of a design with these quirk flags (none: the reference), with
    their reasons."""
    chosen = [*REFERENCE_EXCLUSIONS, *(e for q in quirks for e in QUIRK_EXCLUSIONS.get(q, ()))]
    return {e.pair: e.reason for e in chosen}


def required_pairs(quirks: Iterable[str] = ()) -> tuple[Pair, ...]:
    """The declared pairs a run on a design with these quirk flags must reach."""
    excluded = exclusions(quirks)
    return tuple(pair for pair in declared_pairs() if pair not in excluded)


def _check_exclusions() -> None:
    """Every exclusion names a pair the table declares (a typo would exclude nothing)."""
    declared = set(declared_pairs())
    every = [*REFERENCE_EXCLUSIONS, *(e for es in QUIRK_EXCLUSIONS.values() for e in es)]
    unknown = sorted(e.pair for e in every if e.pair not in declared)
    if unknown:
        raise ValueError(f"exclusions of pairs the table does not declare: {unknown}")


_check_exclusions()
