"""Keys written after ``remove_queue``'s SCAN: the one race the single-client machine can stage.

``remove_queue`` deletes a queue in two halves: Python SCANs the queue's keys, then one script
deletes the fixed keys, every key the SCAN found and — because a client may write between the
SCAN and the script — every key it can *compute* from the indexes: task hashes (``t:<id>``),
group zsets and aggregation sets (``g:…``) and the unique locks the hashes name
(docs/reference-design.md). The machine has one client, so its SCAN is never stale and the
second half is never needed: deleting it would pass unseen.

:class:`LateWritesBroker` makes every other SCAN miss exactly the computable keys, as if each
had been written after the SCAN. The script sees the keyspace and KEYS it would see in that
race, so a correct design leaves the same empty queue; a design that relies on the SCAN alone
leaves those keys, and the check reports them.

>>> import fakeredis
>>> from model.message import TaskMessage
>>> b = LateWritesBroker(fakeredis.FakeRedis())
>>> b.enqueue(TaskMessage(type="t", payload=b"x", id="t1", queue="q"))
>>> b._scan_queue("q"), sorted(b._scan_queue("q"))
(['asynq:{q}:pending'], ['asynq:{q}:pending', 'asynq:{q}:t:t1'])
"""

from __future__ import annotations

from broker import Broker
from model import keys


class LateWritesBroker(Broker):
    """A :class:`Broker` whose odd-numbered queue SCANs miss the keys the script computes."""

    _scans = 0

    def _scan_queue(self, queue: str) -> list[str]:
        found = super()._scan_queue(queue)
        self._scans += 1
        if self._scans % 2 == 0:
            return found
        return [key for key in found if not key.startswith(computed_prefixes(queue))]


def computed_prefixes(queue: str) -> tuple[str, ...]:
    """Prefixes of the keys ``remove_queue`` finds from the indexes, not from the SCAN."""
    return keys.task_prefix(queue), keys.group_prefix(queue), keys.unique_prefix(queue)


__all__ = ["LateWritesBroker", "computed_prefixes"]
