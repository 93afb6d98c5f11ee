"""Variants of the key protocol: the leak-free ``reference`` plus named quirks.

A variant is the reference scripts plus a set of :class:`Quirk` flags and a policy. Each quirk
is a small, documented deviation that the scripts (or the Python wrapper) switch on — one line
of Lua behind ``if Q.<flag>`` — so no script is ever copied per variant. Bug-zoo mutants are
``reference+BZ-<n>``: the reference with exactly one quirk switched on.

>>> variant("reference+BZ-1").quirks == {Quirk.BZ1}
True
>>> Quirk.BZ18 in variant("asynq-v0.26.0").quirks
True
>>> BUG_IDS[Quirk.BZ18]
'BZ-18'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from model.policy import ASYNQ_POLICY, Policy


class Quirk(StrEnum):
    """One deviation from the reference design. The value is the Lua flag name; a quirk that
    is a bug-zoo defect has its id in :data:`BUG_IDS`."""

    #: server Archive trims the archive index but keeps the trimmed hashes
    BZ1 = "bz1"
    #: inspector archive ops (task, all-*) trim the index but keep the trimmed hashes
    BZ2 = "bz2"
    #: inspector delete_task / delete_all never release the unique lock
    BZ3 = "bz3"
    #: locks never released by delete_all pending/aggregating or by set deletion; group-unique
    #: hashes lack unique_key
    BZ4 = "bz4"
    #: unique scripts take the lock before the id-conflict check (lock left on conflict)
    BZ5 = "bz5"
    #: the recoverer skips lease ids whose hash is gone: they stay in lease and active
    BZ7 = "bz7"
    #: delete_aggregation_set leaves the set key in aggregation_sets
    BZ8 = "bz8"
    #: aggregation_check never removes an emptied group from groups
    BZ9 = "bz9"
    #: reclaim puts tasks back into a group without SADD groups
    BZ10 = "bz10"
    #: forward's group branch adds to g:<group> without SADD groups
    BZ11 = "bz11"
    #: remove_queue only clears pending/active/scheduled/retry/archived/lease (+hashes)
    BZ12 = "bz12"
    #: server archive's cutoff trim DELs hashes, then fails (unpack) at >= 8000 ids
    BZ15 = "bz15"
    #: the cap trim may remove the id just archived; server path re-creates its hash
    BZ16 = "bz16"
    #: dequeue/forward/run_all/archive_all HSET on ids whose hash is gone (stubs)
    BZ17 = "bz17"
    #: write_result HSETs without checking that the task exists
    BZ18 = "bz18"
    #: mark_as_complete errors after its writes when the id is already completed
    BZ20 = "bz20"
    #: schedule(_unique) never writes the group field
    SCHEDULE_NO_GROUP = "schedule_no_group"
    #: the janitor does not apply the archive cutoff
    LAZY_CUTOFF = "lazy_cutoff"
    #: done/retry/...: NOT FOUND checks interleaved with writes
    LATE_GUARDS = "late_guards"
    #: pause/unpause accept a queue not in asynq:queues
    PAUSE_UNREGISTERED = "pause_unregistered"
    #: inspector ops (per-task, bulk, remove_queue) refuse a queue not in asynq:queues
    #: (QueueNotFoundError), as Asynq's checkQueueExists does
    INSPECTOR_REQUIRES_QUEUE = "inspector_requires_queue"


#: The bug-zoo id (spec §4) of each quirk that is a zoo defect, as docs, the CLI and saved
#: records name it.
BUG_IDS: dict[Quirk, str] = {
    Quirk.BZ1: "BZ-1",
    Quirk.BZ2: "BZ-2",
    Quirk.BZ3: "BZ-3",
    Quirk.BZ4: "BZ-4",
    Quirk.BZ5: "BZ-5",
    Quirk.BZ7: "BZ-7",
    Quirk.BZ8: "BZ-8",
    Quirk.BZ9: "BZ-9",
    Quirk.BZ10: "BZ-10",
    Quirk.BZ11: "BZ-11",
    Quirk.BZ12: "BZ-12",
    Quirk.BZ15: "BZ-15",
    Quirk.BZ16: "BZ-16",
    Quirk.BZ17: "BZ-17",
    Quirk.BZ18: "BZ-18",
    Quirk.BZ20: "BZ-20",
}

#: Bug-zoo ids that have a mutant of the reference (``reference+BZ-n``).
MUTANTS: dict[str, Quirk] = {bug: quirk for quirk, bug in BUG_IDS.items()}

_V026 = frozenset({
    Quirk.BZ2,
    Quirk.BZ4,
    Quirk.BZ5,
    Quirk.BZ7,
    Quirk.BZ10,
    Quirk.BZ11,
    Quirk.BZ12,
    Quirk.BZ15,
    Quirk.BZ16,
    Quirk.BZ17,
    Quirk.BZ18,
    Quirk.SCHEDULE_NO_GROUP,
    Quirk.LAZY_CUTOFF,
    Quirk.LATE_GUARDS,
    Quirk.PAUSE_UNREGISTERED,
    Quirk.INSPECTOR_REQUIRES_QUEUE,
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
