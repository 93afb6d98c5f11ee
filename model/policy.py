"""Policy parameters of the task lifecycle (spec §3). Asynq's defaults are the defaults."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

#: Go's math.MaxInt64; the total counters wrap to 1 when they reach it.
MAX_INT64 = 2**63 - 1
DAY = 24 * 3600


def asynq_retry_delay(retried: int, rng: random.Random) -> int:
    """Asynq's DefaultRetryDelayFunc: n⁴ + 15 + rand[0,30)·(n+1) seconds, n = retries so far."""
    return retried**4 + 15 + rng.randrange(30) * (retried + 1)


@dataclass(frozen=True)
class Policy:
    """Every tunable of the lifecycle, in seconds unless named otherwise.

    ``archive_keeps_one_less`` reproduces Asynq's off-by-one cap (ZREMRANGEBYRANK 0 −N keeps
    N−1, so the default cap is effectively 9999). The reference design keeps exactly
    ``max_archive_size`` and sets it False; Asynq variants set it True.

    >>> Policy().max_archive_size, Policy().archive_cutoff_days
    (10000, 90)
    >>> Policy(retention=-1)
    Traceback (most recent call last):
    ...
    ValueError: retention must be >= 0 seconds, got -1
    """

    retention: int = 0
    max_archive_size: int = 10_000
    archive_cutoff_days: int = 90
    archive_keeps_one_less: bool = False
    lease_duration: int = 30
    recoverer_interval: int = 60
    recover_skew: int = 30
    forwarder_interval: int = 5
    forward_batch: int = 100
    janitor_interval: int = 8
    janitor_batch_size: int = 100
    heartbeat_interval: int = 5
    stats_ttl: int = 90 * DAY
    max_retry: int = 25
    aggregation_grace: int = 60
    aggregation_max_delay: int = 0
    aggregation_max_size: int = 0
    aggregation_timeout: int = 120
    min_unique_ttl: int = 1
    retry_delay: Callable[[int, random.Random], int] = field(default=asynq_retry_delay)
    seed: int = 0

    def __post_init__(self) -> None:
        self._at_least("retention", 0)
        self._at_least("max_archive_size", 1)
        self._at_least("archive_cutoff_days", 1)
        for name in ("lease_duration", "recoverer_interval", "forwarder_interval",
                     "forward_batch", "janitor_interval", "janitor_batch_size",
                     "heartbeat_interval", "stats_ttl", "aggregation_timeout",
                     "min_unique_ttl"):
            self._at_least(name, 1)
        for name in ("recover_skew", "max_retry", "aggregation_max_delay", "aggregation_max_size"):
            self._at_least(name, 0)
        self._at_least("aggregation_grace", 1)

    def _at_least(self, name: str, low: int) -> None:
        value = getattr(self, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < low:
            unit = "" if name in _COUNTS else " seconds"
            raise ValueError(f"{name} must be >= {low}{unit}, got {value}")

    @property
    def archive_cutoff(self) -> int:
        """Age in seconds beyond which an archived task is trimmed (90 calendar days by default)."""
        return self.archive_cutoff_days * DAY

    @property
    def archive_capacity(self) -> int:
        """How many archived entries survive a trim: N, or N−1 with Asynq's off-by-one."""
        return self.max_archive_size - 1 if self.archive_keeps_one_less else self.max_archive_size

    def retry_delay_for(self, task_id: str, retried: int) -> int:
        """Seconds until the next attempt of ``task_id`` after ``retried`` retries.

        The jitter is drawn from a source seeded by (seed, id, retried), so every implementation
        that asks gets the same answer, in any call order.
        """
        return self.retry_delay(retried, random.Random(f"{self.seed}:{task_id}:{retried}"))


_COUNTS = frozenset({"max_archive_size", "forward_batch", "janitor_batch_size", "max_retry",
                     "aggregation_max_size", "archive_cutoff_days"})

#: Asynq v0.26.0's hard-coded behaviour, for the faithful variants.
ASYNQ_POLICY = Policy(archive_keeps_one_less=True)
