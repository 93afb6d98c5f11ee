"""harness.late_writes: keys written after remove_queue's SCAN, staged for the machine.

The reference's remove_queue purges the keys it can compute from the indexes; with a fresh SCAN
that half is redundant, so a bug in it passed the default check. A stale SCAN makes it count.
"""

from __future__ import annotations

import subprocess
import sys

import fakeredis

from broker import Broker
from harness.late_writes import LateWritesBroker, computed_prefixes
from model.message import TaskMessage

_PROGRAM = """
import fakeredis
from broker import Broker
from harness.late_writes import LateWritesBroker
from harness.mutate import by_id, install
from model.message import TaskMessage
{install}
for kind in (Broker, LateWritesBroker):
    b = kind(fakeredis.FakeRedis())
    b.enqueue(TaskMessage(type="t", payload=b"x", id="t1", queue="q"))
    b.remove_queue("q", force=True)
    print(kind.__name__, sorted(b.snapshot("q").entries))
"""


def _left_after_remove_queue(mutant: str | None) -> dict[str, str]:
    install = f"install(by_id({mutant!r}))" if mutant else ""
    done = subprocess.run([sys.executable, "-c", _PROGRAM.format(install=install)],
                          capture_output=True, text=True, check=True, timeout=120)
    return dict(line.split(" ", 1) for line in done.stdout.strip().splitlines())


def test_only_the_computable_keys_are_missed_and_only_every_other_scan() -> None:
    b = LateWritesBroker(fakeredis.FakeRedis())
    b.enqueue_unique(TaskMessage(type="t", payload=b"x", id="t1", queue="q"), ttl=60)
    b.add_to_group(TaskMessage(type="t", payload=b"y", id="t2", queue="q"), "g")
    b.register("q")
    b.pause("q")
    full = sorted(Broker._scan_queue(b, "q"))
    stale, fresh = b._scan_queue("q"), b._scan_queue("q")
    assert sorted(fresh) == full
    assert sorted(stale) == [k for k in full if not k.startswith(computed_prefixes("q"))]
    assert "asynq:{q}:paused" in stale and len(stale) < len(full)


def test_the_reference_removes_the_queue_whatever_the_scan_missed() -> None:
    assert _left_after_remove_queue(None) == {"Broker": "[]", "LateWritesBroker": "[]"}


def test_a_purge_bug_the_fresh_scan_hides_is_seen_with_late_writes() -> None:
    """remove_queue.lua without its DEL of a computed task hash: unseen with a fresh SCAN (the
    SCAN found the hash and the final DEL took it), a leaked hash with a stale one."""
    left = _left_after_remove_queue("remove_queue:53:delete_write")
    assert left == {"Broker": "[]", "LateWritesBroker": "['asynq:{q}:t:t1']"}
