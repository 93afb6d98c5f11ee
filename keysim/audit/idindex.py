"""A compact map task id → the index keys holding it, for millions of ids in little memory.

Ids are stored as their 64-bit hash (8 bytes) plus a 2-byte slot number and a 1-byte "a task
hash was seen" flag: 11 bytes per (id, index) pair instead of ~100 for a Python string in a
dict. The audit never trusts a hash match alone for a finding: every candidate is re-read
exactly from Redis before it is reported, so a (2⁻⁶⁴-rare) collision can only hide a finding,
never invent one.

>>> ix = IdIndex(); a = ix.slot("asynq:{q}:pending"); ix.add(a, ["t1", "t2"]); ix.freeze()
>>> [ix.keys_of(s) for s in ix.lookup(["t2", "zz"])]
[['asynq:{q}:pending'], []]
>>> ix.unseen(a, ["t1", "t2"])
['t1']
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt


def _hashes(ids: Iterable[str]) -> npt.NDArray[np.int64]:
    # Python's str hash is a keyed 64-bit SipHash, stable within this process — all we need.
    return np.fromiter((hash(i) for i in ids), dtype=np.int64)


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

    def add(self, slot: int, ids: Sequence[str]) -> None:
        """Record that index ``slot`` holds ``ids`` (duplicates are kept: a list may repeat one)."""
        self._raw_hashes.extend(hash(i) for i in ids)
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

    def lookup(self, ids: Sequence[str], mark_seen: bool = True) -> list[list[int]]:
        """For each id, the slots holding it (with repeats); marks the ids as seen."""
        h = _hashes(ids)
        left = np.searchsorted(self._hashes, h, side="left")
        right = np.searchsorted(self._hashes, h, side="right")
        out = []
        for lo, hi in zip(left.tolist(), right.tolist(), strict=True):
            out.append(self._slots[lo:hi].tolist())
            if mark_seen:
                self._seen[lo:hi] = True
        return out

    def unseen(self, slot: int, ids: Sequence[str]) -> list[str]:
        """The ids of ``ids`` (members of ``slot``) whose task hash was never seen."""
        h = _hashes(ids)
        left = np.searchsorted(self._hashes, h, side="left")
        right = np.searchsorted(self._hashes, h, side="right")
        return [i for i, lo, hi in zip(ids, left.tolist(), right.tolist(), strict=True)
                if lo == hi or not self._seen[lo:hi].any()]

    def keys_of(self, slots: Iterable[int]) -> list[str]:
        """Index key names of ``slots``."""
        return [self._slot_keys[s] for s in slots]

    @property
    def slot_keys(self) -> list[str]:
        """Every index key, in slot order."""
        return list(self._slot_keys)

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays (the audit's per-id memory)."""
        return int(self._hashes.nbytes + self._slots.nbytes + self._seen.nbytes)
