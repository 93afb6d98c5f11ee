"""Variants of the key protocol: the leak-free ``reference`` plus named quirks.

A variant is the reference scripts plus a set of :class:`Quirk` flags and a policy. Each quirk
is a small, documented deviation that the scripts (or the Python wrapper) switch on — one line
of Lua behind ``if Q.<flag>`` — so no script is ever copied per variant. Bug-zoo mutants are
``reference+BZ-<n>``: the reference with exactly one quirk switched on.

>>> variant("reference+BZ-1").quirks == {Quirk.ARCHIVE_TRIM_KEEPS_HASHES}
True
>>> Quirk.WRITE_RESULT_WITHOUT_TASK in variant("asynq-v0.26.0").quirks
True
>>> BUG_IDS[Quirk.WRITE_RESULT_WITHOUT_TASK]
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
    ARCHIVE_TRIM_KEEPS_HASHES = "archive_trim_keeps_hashes"
    #: inspector archive ops (task, all-*) trim the index but keep the trimmed hashes
    INSPECTOR_ARCHIVE_TRIM_KEEPS_HASHES = "inspector_archive_trim_keeps_hashes"
    #: inspector delete_task / delete_all never release the unique lock
    INSPECTOR_DELETE_KEEPS_LOCK = "inspector_delete_keeps_lock"
    #: locks never released by delete_all pending/aggregating or by set deletion; group-unique
    #: hashes lack unique_key
    LOCKS_KEPT_UNTIL_TTL = "locks_kept_until_ttl"
    #: unique scripts take the lock before the id-conflict check (lock left on conflict)
    LOCK_TAKEN_BEFORE_ID_CHECK = "lock_taken_before_id_check"
    #: the recoverer skips lease ids whose hash is gone: they stay in lease and active
    RECOVER_SKIPS_MISSING_HASHES = "recover_skips_missing_hashes"
    #: delete_aggregation_set leaves the set key in aggregation_sets
    SET_DELETE_KEEPS_INDEX_ENTRY = "set_delete_keeps_index_entry"
    #: aggregation_check never removes an emptied group from groups
    EMPTIED_GROUP_STAYS_LISTED = "emptied_group_stays_listed"
    #: reclaim puts tasks back into a group without SADD groups
    RECLAIM_LEAVES_GROUP_UNLISTED = "reclaim_leaves_group_unlisted"
    #: forward's group branch adds to g:<group> without SADD groups
    FORWARD_LEAVES_GROUP_UNLISTED = "forward_leaves_group_unlisted"
    #: remove_queue only clears pending/active/scheduled/retry/archived/lease (+hashes)
    REMOVE_QUEUE_LEAVES_KEYS = "remove_queue_leaves_keys"
    #: server archive's cutoff trim DELs hashes, then fails (unpack) at >= 8000 ids
    ARCHIVE_CUTOFF_UNPACK_OVERFLOW = "archive_cutoff_unpack_overflow"
    #: the cap trim may remove the id just archived; server path re-creates its hash
    ARCHIVE_CAP_TRIMS_NEW_ENTRY = "archive_cap_trims_new_entry"
    #: dequeue/forward/run_all/archive_all HSET on ids whose hash is gone (stubs)
    HSET_ON_MISSING_HASH = "hset_on_missing_hash"
    #: write_result HSETs without checking that the task exists
    WRITE_RESULT_WITHOUT_TASK = "write_result_without_task"
    #: mark_as_complete errors after its writes when the id is already completed
    COMPLETE_FAILS_AFTER_WRITES = "complete_fails_after_writes"
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
    #: delete_all counts every id of the index, hash or not (spec T36–T38)
    BULK_DELETE_COUNTS_EVERY_ID = "bulk_delete_counts_every_id"
    #: delete_task/archive_task/run_task on a hash its state's index does not hold fail with a
    #: script error (a Lua error without state or group, else an error reply), not NOT_FOUND
    #: (spec T28–T30)
    INSPECTOR_ERRORS_ON_INCONSISTENT_TASK = "inspector_errors_on_inconsistent_task"
    #: read_aggregation_set answers an empty message for a member whose hash is gone (its nil
    #: msg decodes to a zero TaskMessage) where the reference leaves it out (spec T22)
    READ_SET_KEEPS_MISSING_MESSAGES = "read_set_keeps_missing_messages"
    #: the client SADDs asynq:queues only for a queue it has not published yet (its
    #: ``queuesPublished`` cache, v0.25+), and only its own RemoveQueue clears the cache: after
    #: another process removes the queue it stays unregistered (spec BZ-13)
    PUBLISHED_QUEUES_CACHE = "published_queues_cache"


#: The bug-zoo id (spec §4) of each quirk that is a zoo defect, as docs, the CLI and saved
#: records name it.
BUG_IDS: dict[Quirk, str] = {
    Quirk.ARCHIVE_TRIM_KEEPS_HASHES: "BZ-1",
    Quirk.INSPECTOR_ARCHIVE_TRIM_KEEPS_HASHES: "BZ-2",
    Quirk.INSPECTOR_DELETE_KEEPS_LOCK: "BZ-3",
    Quirk.LOCKS_KEPT_UNTIL_TTL: "BZ-4",
    Quirk.LOCK_TAKEN_BEFORE_ID_CHECK: "BZ-5",
    Quirk.RECOVER_SKIPS_MISSING_HASHES: "BZ-7",
    Quirk.SET_DELETE_KEEPS_INDEX_ENTRY: "BZ-8",
    Quirk.EMPTIED_GROUP_STAYS_LISTED: "BZ-9",
    Quirk.RECLAIM_LEAVES_GROUP_UNLISTED: "BZ-10",
    Quirk.FORWARD_LEAVES_GROUP_UNLISTED: "BZ-11",
    Quirk.REMOVE_QUEUE_LEAVES_KEYS: "BZ-12",
    Quirk.ARCHIVE_CUTOFF_UNPACK_OVERFLOW: "BZ-15",
    Quirk.ARCHIVE_CAP_TRIMS_NEW_ENTRY: "BZ-16",
    Quirk.HSET_ON_MISSING_HASH: "BZ-17",
    Quirk.WRITE_RESULT_WITHOUT_TASK: "BZ-18",
    Quirk.COMPLETE_FAILS_AFTER_WRITES: "BZ-20",
}

#: Bug-zoo ids that have a mutant of the reference (``reference+BZ-n``).
MUTANTS: dict[str, Quirk] = {bug: quirk for quirk, bug in BUG_IDS.items()}

_V026 = frozenset({
    Quirk.INSPECTOR_ARCHIVE_TRIM_KEEPS_HASHES,
    Quirk.LOCKS_KEPT_UNTIL_TTL,
    Quirk.LOCK_TAKEN_BEFORE_ID_CHECK,
    Quirk.RECOVER_SKIPS_MISSING_HASHES,
    Quirk.RECLAIM_LEAVES_GROUP_UNLISTED,
    Quirk.FORWARD_LEAVES_GROUP_UNLISTED,
    Quirk.REMOVE_QUEUE_LEAVES_KEYS,
    Quirk.ARCHIVE_CUTOFF_UNPACK_OVERFLOW,
    Quirk.ARCHIVE_CAP_TRIMS_NEW_ENTRY,
    Quirk.HSET_ON_MISSING_HASH,
    Quirk.WRITE_RESULT_WITHOUT_TASK,
    Quirk.SCHEDULE_NO_GROUP,
    Quirk.LAZY_CUTOFF,
    Quirk.LATE_GUARDS,
    Quirk.PAUSE_UNREGISTERED,
    Quirk.INSPECTOR_REQUIRES_QUEUE,
    Quirk.BULK_DELETE_COUNTS_EVERY_ID,
    Quirk.INSPECTOR_ERRORS_ON_INCONSISTENT_TASK,
    Quirk.READ_SET_KEEPS_MISSING_MESSAGES,
    Quirk.PUBLISHED_QUEUES_CACHE,
})
#: v0.24.0: the server archive trim leaked hashes (BZ-1), had no unpack overflow (BZ-15) and
#: no published-queues cache (every enqueue SADDs).
_V024 = (_V026 | {Quirk.ARCHIVE_TRIM_KEEPS_HASHES}) - {Quirk.ARCHIVE_CUTOFF_UNPACK_OVERFLOW,
                                                        Quirk.PUBLISHED_QUEUES_CACHE}


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
