"""Variants of the key protocol: the leak-free ``reference`` plus named quirks.

A variant is the reference scripts plus a set of :class:`Quirk` flags and a policy. Each quirk
is a small, documented deviation that the scripts (or the Python wrapper) switch on — one line
of Lua behind ``if Q.<flag>`` — so no script is ever copied per variant. Bug-zoo mutants are
``reference+BZ-<n>``: the reference with exactly one quirk switched on.

>>> variant("reference+BZ-1").quirks == {Quirk.BZ1}
True
>>> Quirk.BZ18 in variant("asynq-v0.26.0").quirks
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from model.policy import ASYNQ_POLICY, Policy


class Quirk(StrEnum):
    """One deviation from the reference design. The value is the Lua flag name."""

    BZ1 = "bz1"  # server Archive trims the archive index but keeps the trimmed hashes
    BZ2 = "bz2"  # inspector archive ops (task, all-*) trim the index but keep the trimmed hashes
    BZ3 = "bz3"  # inspector delete_task / delete_all never release the unique lock
    # locks never released by delete_all pending/aggregating or by set deletion; group-unique
    # hashes lack unique_key
    BZ4 = "bz4"
    BZ5 = "bz5"  # unique scripts take the lock before the id-conflict check (lock left on conflict)
    BZ7 = "bz7"  # the recoverer skips lease ids whose hash is gone: they stay in lease and active
    BZ8 = "bz8"  # delete_aggregation_set leaves the set key in aggregation_sets
    BZ9 = "bz9"  # aggregation_check never removes an emptied group from groups
    BZ10 = "bz10"  # reclaim puts tasks back into a group without SADD groups
    BZ11 = "bz11"  # forward's group branch adds to g:<group> without SADD groups
    BZ12 = "bz12"  # remove_queue only clears pending/active/scheduled/retry/archived/lease (+hashes)
    BZ15 = "bz15"  # server archive's cutoff trim DELs hashes, then fails (unpack) at >= 8000 ids
    BZ16 = "bz16"  # the cap trim may remove the id just archived; server path re-creates its hash
    BZ17 = "bz17"  # dequeue/forward/run_all/archive_all HSET on ids whose hash is gone (stubs)
    BZ18 = "bz18"  # write_result HSETs without checking that the task exists
    BZ20 = "bz20"  # mark_as_complete errors after its writes when the id is already completed
    SCHEDULE_NO_GROUP = "schedule_no_group"  # schedule(_unique) never writes the group field
    LAZY_CUTOFF = "lazy_cutoff"  # the janitor does not apply the archive cutoff
    LATE_GUARDS = "late_guards"  # done/retry/...: NOT FOUND checks interleaved with writes
    PAUSE_UNREGISTERED = "pause_unregistered"  # pause/unpause accept a queue not in asynq:queues
    # inspector ops (per-task, bulk, remove_queue) refuse a queue not in asynq:queues
    # (QueueNotFoundError), as Asynq's checkQueueExists does
    INSPECTOR_REQUIRES_QUEUE = "inspector_requires_queue"


#: Bug-zoo ids (spec §4) that have a mutant of the reference.
MUTANTS: dict[str, Quirk] = {f"BZ-{q.name[2:]}": q for q in Quirk if q.name.startswith("BZ")}

_V026 = frozenset({
    Quirk.BZ2, Quirk.BZ4, Quirk.BZ5, Quirk.BZ7, Quirk.BZ10, Quirk.BZ11, Quirk.BZ12, Quirk.BZ15,
    Quirk.BZ16, Quirk.BZ17, Quirk.BZ18, Quirk.SCHEDULE_NO_GROUP, Quirk.LAZY_CUTOFF,
    Quirk.LATE_GUARDS, Quirk.PAUSE_UNREGISTERED, Quirk.INSPECTOR_REQUIRES_QUEUE,
})
#: v0.24.0: the server archive trim leaked hashes (BZ-1) and had no unpack overflow (BZ-15).
_V024 = (_V026 | {Quirk.BZ1}) - {Quirk.BZ15}


@dataclass(frozen=True)
class Variant:
    """A named behaviour: quirks switched on and the policy the variant runs with by default."""

    name: str
    quirks: frozenset[Quirk]
    policy: Policy = field(default_factory=Policy)
    doc: str = ""

    def has(self, quirk: Quirk) -> bool:
        """True when ``quirk`` is switched on."""
        return quirk in self.quirks


VARIANTS: dict[str, Variant] = {
    "reference": Variant("reference", frozenset(), Policy(),
                         "leak-free design: every defect of spec §4 fixed"),
    "asynq-v0.26.0": Variant("asynq-v0.26.0", _V026, ASYNQ_POLICY,
                             "faithful to Asynq v0.26.0, open defects included"),
    "asynq-v0.24.0": Variant("asynq-v0.24.0", _V024, ASYNQ_POLICY,
                             "v0.26.0 with the server archive trim leaking hashes (BZ-1)"),
}


def variant(name: str) -> Variant:
    """Look up ``name``: a variant of :data:`VARIANTS` or ``reference+BZ-<n>``."""
    if name in VARIANTS:
        return VARIANTS[name]
    base, plus, bug = name.partition("+")
    if plus and base == "reference" and bug in MUTANTS:
        return Variant(name, frozenset({MUTANTS[bug]}), Policy(), f"reference with {bug}")
    known = ", ".join([*VARIANTS, *(f"reference+{b}" for b in MUTANTS)])
    raise ValueError(f"unknown variant {name!r}; expected one of: {known}")


def all_names() -> list[str]:
    """Every selectable variant name, mutants included."""
    return [*VARIANTS, *(f"reference+{b}" for b in MUTANTS)]
