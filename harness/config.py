"""What one run of the stateful machine tests: :class:`MachineConfig` and the machine's policy.

>>> MachineConfig(variant="reference+BZ-2", faults=True).strict
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from model.clock import VirtualClock
from model.policy import DAY, Policy

#: The machine's policy: small caps and short times so trims, expiries and archives happen.
MACHINE_POLICY = Policy(max_archive_size=3, archive_cutoff_days=2, aggregation_grace=10,
                        aggregation_max_size=3, aggregation_max_delay=0, stats_ttl=3 * 86400)

#: Policies drawn per example (``MachineConfig.policies``): the choices of each field, the
#: first being :data:`MACHINE_POLICY`'s (what a shrunk program falls back to). Batches of 1–3
#: make the batching loops run more than once; caps of 1–2 trim at once; group sizes above
#: the aggregation max size happen; lease, skew, grace, timeout and TTLs take values that
#: differ from each other, so a use of one where another is meant shows.
POLICY_CHOICES: Mapping[str, tuple[int, ...]] = MappingProxyType({
    "forward_batch": (100, 1, 2, 3),
    "janitor_batch_size": (100, 1, 2, 3),
    "max_archive_size": (3, 1, 2, 4),
    "archive_cutoff_days": (2, 1, 3),
    "lease_duration": (30, 20, 45),
    "recover_skew": (30, 7, 12),
    "aggregation_grace": (10, 5, 15),
    "aggregation_max_size": (3, 0, 2, 1),
    "aggregation_max_delay": (0, 25),
    "aggregation_timeout": (120, 90, 150),
    "stats_ttl": (3 * DAY, 2 * DAY),
})

#: Starting points an example may draw (``MachineConfig.scenarios``): each sets up a
#: precondition that random steps reach rarely (see ``KeyMachine.scenario``).
SCENARIOS = ("none", "in_hand", "lost_leases", "completed", "archive_full", "paused", "staged",
             "stalled_aggregator", "locked", "evicted_lease", "evicted_due", "counters_at_max",
             "crowded_group")


@dataclass(frozen=True)
class MachineConfig:
    """What to test: the broker variant, the backend, the policy, whether to drain at the end."""

    variant: str = "reference"
    #: "fakeredis", "server" (a private real Redis), a redis:// URL, "cluster" (a private local
    #: Redis Cluster of three masters, the broker on ``redis.cluster.RedisCluster``), or
    #: "asynq": Asynq's own Go code (the conformance driver for an ``asynq-vX.Y.Z`` variant) on
    #: a private real Redis; then the policy's fields Asynq hard-codes take Asynq's values (see
    #: :func:`make_machine`).
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
    #: Faults as actions, by name (``harness.fault_rules.FAULTS``: ``failover``, ``connloss``,
    #: ``skew``, ``cache``, ``abort``): each adds its rules, and its outcomes join the coverage
    #: goal (``keysim check --faults``).
    fault_rules: frozenset[str] = frozenset()
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
    #: Each example draws its own policy (fields of :data:`POLICY_CHOICES`) in its first step,
    #: ``state.setup(...)``, which the printed program shows; model and broker both get it.
    policies: bool = False
    #: Each example starts from a drawn scenario (:data:`SCENARIOS`), in the same first step.
    scenarios: bool = False
    #: Add the ``deadline`` rule: time lands exactly on the next deadline of a kind (retention
    #: end, archive cutoff, lease expiry, due time, unique TTL, aggregation grace and timeout),
    #: one second before it or one after.
    deadlines: bool = False
    #: On the ``asynq`` backend: the Asynq release whose Go code runs (``v0.23.0``); None: the
    #: variant's own version. The variant then only names the nearest behaviour (``keysim
    #: matrix`` runs every release with its nearest ``asynq-v*`` variant, without the oracle).
    asynq_version: str | None = None

    @property
    def strict(self) -> bool:
        """Whether I6 is judged strictly (see ``strict_locks``)."""
        return self.oracle if self.strict_locks is None else self.strict_locks
