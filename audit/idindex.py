"""A compact map task id → the index keys holding it, for millions of ids in little memory.

Ids are stored as their 64-bit hash (8 bytes) plus a 2-byte slot number and a 1-byte "a task
hash was seen" flag: 11 bytes per (id, index) pair instead of ~100 for a Python string in a
dict. The audit never trusts a hash match alone for a finding: every candidate is re-read
exactly from Redis before it is reported, so a (2⁻⁶⁴-rare) collision can only hide a finding,
never invent one.

Ids are the raw bytes Redis returns (no decoding on the hot path).

>>> ix = IdIndex(); a = ix.slot("asynq:{q}:pending"); ix.add(a, [b"t1", b"t2"]); ix.freeze()
>>> [ix.keys_of(s) for s in ix.lookup([b"t2", b"zz"])]
[['asynq:{q}:pending'], []]
>>> ix.unseen(a, [b"t1", b"t2"])
[b't1']
>>> ix.locate([b"t1", b"zz"], mark_seen=False)[1:]  # counts, first slots (starts: hash order)
([1, 0], [0, -1])
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt


def _hashes(ids: Sequence[bytes]) -> npt.NDArray[np.int64]:
    # Python's bytes hash is a keyed 64-bit SipHash, stable within this process — all we need.
    return np.fromiter(map(hash, ids), dtype=np.int64, count=len(ids))


def _spans(table: npt.NDArray[np.int64], h: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.intp],
                                                                            npt.NDArray[np.intp]]:
    """Where each of ``h`` starts in sorted ``table`` and how often it occurs there. The needles
    are searched in sorted order (twice as fast on millions of entries: the searches share
    their path through the table), then put back in the caller's order."""
    order = np.argsort(h, kind="stable")
    needles = h[order]
    left = np.empty(len(h), dtype=np.intp)
    count = np.empty(len(h), dtype=np.intp)
    left[order] = np.searchsorted(table, needles, side="left")
    count[order] = np.searchsorted(table, needles, side="right") - left[order]
    return left, count


class IdIndex:
    """Build with :meth:`slot` and :meth:`add`, then :meth:`freeze`, then query."""

    def __init__(self) -> None:
        self._slot_keys: list[str] = []
        self._slot_of: dict[str, int] = {}
        self._raw_hashes = array("q")
        self._raw_slots = array("H")
        self._hashes: npt.NDArray[np.int64] = np.empty(0, dtype=np.int64)
        self._slots: npt.NDArray[np.uint16] = np.empty(0, dtype=np.uint16)
        self._seen: npt.NDArray[np.bool_] = np.empty(0, dtype=np.bool_)

    def slot(self, key: str) -> int:
        """The slot number of index ``key`` (allocated on first use; at most 65,535 keys)."""
        if key not in self._slot_of:
            if len(self._slot_keys) >= 0xFFFF:
                raise OverflowError("more than 65,535 index keys in one queue")
            self._slot_of[key] = len(self._slot_keys)
            self._slot_keys.append(key)
        return self._slot_of[key]

    def add(self, slot: int, ids: Sequence[bytes]) -> None:
        """Record that index ``slot`` holds ``ids`` (duplicates are kept: a list may repeat one)."""
        self._raw_hashes.extend(map(hash, ids))
        self._raw_slots.extend([slot] * len(ids))

    def freeze(self) -> None:
        """Sort the pairs for lookup; :meth:`add` may not be called afterwards."""
        hashes = np.frombuffer(self._raw_hashes, dtype=np.int64)
        order = np.argsort(hashes, kind="stable")
        self._hashes = hashes[order]
        self._slots = np.frombuffer(self._raw_slots, dtype=np.uint16)[order]
        self._seen = np.zeros(len(order), dtype=np.bool_)
        self._raw_hashes, self._raw_slots = array("q"), array("H")

    def __len__(self) -> int:
        return len(self._hashes)

    def locate(self, ids: Sequence[bytes], mark_seen: bool = True) -> tuple[list[int], list[int], list[int]]:
        """Per id: where its pairs start, how many there are and the first one's slot (-1 when
        none); marks the ids as seen. :meth:`slots_at` lists the slots of one id."""
        left, count = _spans(self._hashes, _hashes(ids))
        first = np.full(len(ids), -1, dtype=np.int64)
        found = count > 0
        first[found] = self._slots[left[found]]
        if mark_seen:
            self._seen[left[count == 1]] = True
            for lo, n in zip(left[count > 1].tolist(), count[count > 1].tolist(), strict=True):
                self._seen[lo:lo + n] = True
        return left.tolist(), count.tolist(), first.tolist()

    def slots_at(self, start: int, count: int) -> list[int]:
        """The slots of the ``count`` pairs from ``start`` (one id, as :meth:`locate` found it)."""
        return list(self._slots[start:start + count].tolist())

    def lookup(self, ids: Sequence[bytes], mark_seen: bool = True) -> list[list[int]]:
        """For each id, the slots holding it (with repeats); marks the ids as seen."""
        starts, counts, _ = self.locate(ids, mark_seen)
        return [self.slots_at(lo, n) for lo, n in zip(starts, counts, strict=True)]

    def unseen(self, slot: int, ids: Sequence[bytes]) -> list[bytes]:
        """The ids of ``ids`` (members of ``slot``) whose task hash was never seen."""
        left, count = _spans(self._hashes, _hashes(ids))
        seen = np.zeros(len(ids), dtype=np.bool_)
        one = count == 1
        seen[one] = self._seen[left[one]]
        for n in np.flatnonzero(count > 1).tolist():
            seen[n] = self._seen[left[n]:left[n] + count[n]].any()
        return [ids[n] for n in np.flatnonzero(~seen).tolist()]

    def keys_of(self, slots: Iterable[int]) -> list[str]:
        """Index key names of ``slots``."""
        return [self._slot_keys[s] for s in slots]

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays (the audit's per-id memory)."""
        return int(self._hashes.nbytes + self._slots.nbytes + self._seen.nbytes)
