"""What one run of the stateful machine tests: :class:`MachineConfig` and the machine's policy.

>>> MachineConfig(variant="reference+BZ-2", faults=True).strict
True
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from model.clock import VirtualClock
from model.policy import Policy

#: The machine's policy: small caps and short times so trims, expiries and archives happen.
MACHINE_POLICY = Policy(max_archive_size=3, archive_cutoff_days=2, aggregation_grace=10,
                        aggregation_max_size=3, aggregation_max_delay=0, stats_ttl=3 * 86400)


@dataclass(frozen=True)
class MachineConfig:
    """What to test: the broker variant, the backend, the policy, whether to drain at the end."""

    variant: str = "reference"
    #: "fakeredis", "server" (a private real Redis), a redis:// URL, or "asynq": Asynq's own Go
    #: code (the conformance driver for an ``asynq-vX.Y.Z`` variant) on a private real Redis;
    #: then the policy's fields Asynq hard-codes take Asynq's values (see :func:`make_machine`).
    backend: str = "fakeredis"
    policy: Policy = MACHINE_POLICY
    drain: bool = True
    #: Compare every answer and keyspace with the reference model. Off for the Asynq variants,
    #: whose intended differences are not leaks: then only invariants and the drain judge.
    oracle: bool = True
    #: Builds the system under test instead of ``Broker(client, variant, policy, clock)``
    #: (e.g. the Go-backed ``AsynqGoBroker``); it must offer ``snapshot`` and ``expire_due``.
    broker_factory: Callable[[VirtualClock, Policy], Any] | None = None
    #: Judge unique locks strictly (I6: a live lock's owner exists, is not completed and names
    #: the lock). None: strict exactly when the oracle is on — the reference design releases
    #: locks early, Asynq keeps some until their TTL (BZ-4, BZ-5).
    strict_locks: bool | None = None
    #: Environment faults: the ``evict`` rule deletes a task hash as Redis eviction (an
    #: ``allkeys-*`` maxmemory policy) or a manual DEL would, leaving its index entries dangling.
    faults: bool = False
    #: Every example starts by archiving this many tasks at once, then lets the archive cutoff
    #: pass (a failure burst, then quiet days), so the next archive's cutoff trim meets them
    #: all. 0: no flood. BZ-15 needs 8000; the policy's archive cap must hold them.
    flood: int = 0
    #: Defect ids (``BZ-n``, as :func:`attribute` names them) whose violations are tolerated,
    #: so a run can look past known defects for the next one.
    ignore: frozenset[str] = frozenset()
    #: Swarm testing: each example first draws the subset of rules it may use (the printed
    #: program starts with ``state.swarm(enabled=...)``).
    swarm: bool = False
    #: Focus: only these rules run (plus ``tick`` when each of them has a precondition) — a
    #: fixed swarm, for hunting one defect whose path needs several specific steps.
    #: None: every rule.
    rules: frozenset[str] | None = None

    @property
    def strict(self) -> bool:
        """Whether I6 is judged strictly (see ``strict_locks``)."""
        return self.oracle if self.strict_locks is None else self.strict_locks
