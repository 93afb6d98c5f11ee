"""The workload spec: what to simulate, as frozen dataclasses loadable from TOML.

Durations are seconds or strings with a unit (``"90s"``, ``"5m"``, ``"2h"``, ``"7d"``). Every
invalid value raises :class:`SpecError` naming the field by its path (``queues[0].outcomes``).

>>> spec = spec_from_dict({"name": "x", "duration": "2h", "queues": [{"name": "default"}],
...                        "servers": [{"workers": 4}]})
>>> spec.duration, spec.servers[0].queues
(7200, ('default',))
>>> spec_from_dict({"name": "x", "queues": [{"name": "q", "outcomes": {"success": 0.5}}]})
Traceback (most recent call last):
...
simulations.spec.SpecError: queues[0].outcomes: probabilities must sum to 1, got 0.5
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.variants import all_names
from model.states import TaskState
from model.transitions import bulk_states

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3}

#: Operator actions and the inspector call each maps to.
ACTIONS = ("archive-all", "delete-all", "run-all", "remove-queue", "pause", "unpause")
#: The states a bulk action takes: the inspector's, but aggregating (an action names no group).
_BULK_STATES = {action: tuple(s.value for s in bulk_states(action.replace("-", "_"))
                              if s is not TaskState.AGGREGATING)
                for action in ("archive-all", "delete-all", "run-all")}
LOOPS = ("forwarder", "janitor", "recoverer", "aggregator")
OUTCOMES = ("success", "failure", "skip_retry", "revoke", "crash")


class SpecError(ValueError):
    """An invalid workload spec; the message starts with the offending field's path."""


def parse_duration(value: object, where: str) -> int:
    """Whole seconds from an int/float or a string like ``"7d"``.

    >>> parse_duration("1.5h", "duration"), parse_duration(30, "step")
    (5400, 30)
    """
    if isinstance(value, bool):
        raise SpecError(f"{where}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2) or "s"]
    else:
        raise SpecError(f"{where}: expected a duration like 90, '5m', '2h' or '7d', got {value!r}")
    if seconds < 0:
        raise SpecError(f"{where}: must be >= 0, got {value!r}")
    return round(seconds)


def parse_size(value: object, where: str) -> int:
    """Bytes from an int or a string like ``"4mb"``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and (m := _SIZE.match(value)):
        return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower()])
    raise SpecError(f"{where}: expected a size like 1048576 or '4mb', got {value!r}")


@dataclass(frozen=True)
class Distribution:
    """A non-negative random quantity: ``fixed`` (value), ``uniform`` (low, high),
    ``exponential`` (mean) or ``lognormal`` (median, sigma)."""

    kind: str = "fixed"
    value: float = 0.0
    low: float = 0.0
    high: float = 0.0
    mean: float = 0.0
    median: float = 0.0
    sigma: float = 0.0



@dataclass(frozen=True)
class Arrival:
    """Tasks per second: ``constant`` (exactly rate·step per step, fractions carried),
    ``poisson`` (rate) or ``bursts`` (Poisson at ``rate``, plus ``burst_rate`` for
    ``burst_length`` seconds every ``burst_every`` seconds)."""

    kind: str = "poisson"
    rate: float = 1.0
    burst_rate: float = 0.0
    burst_every: int = 3600
    burst_length: int = 60
    until: int = 0  # stop arriving at this virtual second (0 = never)


@dataclass(frozen=True)
class Unique:
    """Share of tasks enqueued with ``Unique(ttl)``; ``key_space`` distinct payloads (0: every
    unique task has its own payload, so none is ever a duplicate)."""

    share: float = 0.0
    ttl: int = 3600
    key_space: int = 0


@dataclass(frozen=True)
class Scheduled:
    """Share of tasks enqueued with ``ProcessIn(delay)``."""

    share: float = 0.0
    delay: Distribution = field(default_factory=lambda: Distribution("fixed", value=60))


@dataclass(frozen=True)
class Grouped:
    """Share of tasks enqueued with ``Group(g)``, spread uniformly over ``groups`` names."""

    share: float = 0.0
    groups: int = 1


@dataclass(frozen=True)
class QueueSpec:
    """One queue's workload."""

    name: str
    arrival: Arrival = field(default_factory=Arrival)
    payload: Distribution = field(default_factory=lambda: Distribution("fixed", value=128))
    duration: Distribution = field(default_factory=lambda: Distribution("fixed", value=0.5))
    outcomes: Mapping[str, float] = field(default_factory=lambda: {"success": 1.0})
    max_retry: int = 25
    retention: int = 0
    unique: Unique = field(default_factory=Unique)
    scheduled: Scheduled = field(default_factory=Scheduled)
    grouped: Grouped = field(default_factory=Grouped)


@dataclass(frozen=True)
class ServerSpec:
    """One Asynq server: ``workers`` concurrent handlers over ``queues`` (name → priority);
    its forwarder, janitor, recoverer and aggregator run for exactly these queues."""

    name: str
    workers: int
    queues: tuple[str, ...]
    priorities: tuple[int, ...]
    #: Background loops this server runs (Asynq runs all four; ``loops = ["forwarder",
    #: "recoverer"]`` models a consumer without a janitor, e.g. a pre-v0.19 server or a port).
    loops: tuple[str, ...] = ("forwarder", "janitor", "recoverer", "aggregator")


@dataclass(frozen=True)
class Action:
    """An inspector call at ``at`` (repeated every ``every`` seconds when > 0)."""

    action: str
    queue: str
    at: int
    every: int = 0
    state: str = ""
    force: bool = False


@dataclass(frozen=True)
class RedisSettings:
    """Real-Redis-only settings (``maxmemory`` 0 = unlimited)."""

    maxmemory: int = 0
    maxmemory_policy: str = "noeviction"


@dataclass(frozen=True)
class WorkloadSpec:
    """A whole simulation: queues, servers, operator actions, policy overrides, run length."""

    name: str
    queues: tuple[QueueSpec, ...]
    servers: tuple[ServerSpec, ...]
    description: str = ""
    finding: str = ""
    variant: str = "reference"
    duration: int = 3600
    sample_interval: int = 60
    step: int = 1
    seed: int = 0
    retry_delay: int = -1  # -1: Asynq's DefaultRetryDelayFunc; else fixed seconds
    policy: Mapping[str, int] = field(default_factory=dict)
    actions: tuple[Action, ...] = ()
    redis: RedisSettings = field(default_factory=RedisSettings)

    def queue(self, name: str) -> QueueSpec:
        """The queue called ``name``."""
        for q in self.queues:
            if q.name == name:
                return q
        raise KeyError(name)


#: Policy fields a spec may override (the rest are Asynq's hard-coded defaults).
POLICY_FIELDS = ("max_archive_size", "archive_cutoff_days", "janitor_interval",
                 "janitor_batch_size", "forwarder_interval", "aggregation_grace",
                 "aggregation_max_delay", "aggregation_max_size", "lease_duration")
_DURATION_POLICY = frozenset({"janitor_interval", "forwarder_interval", "aggregation_grace",
                              "aggregation_max_delay", "lease_duration"})


# --- parsing ---------------------------------------------------------------------------------


def load_raw(path: Path | str) -> dict[str, Any]:
    """The parsed TOML of a spec file."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise SpecError(f"{path}: not valid TOML: {err}") from err


def load_spec(path: Path | str, scale: str = "full") -> WorkloadSpec:
    """Read a TOML spec file; ``scale="ci"`` applies its ``[ci]`` table (reduced scale)."""
    return spec_from_dict(load_raw(path), scale)


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` deep-merged into ``base``: tables recursively, arrays of tables by index.

    >>> merge({"a": 1, "q": [{"n": "x", "r": 1}]}, {"q": [{"r": 2}]})
    {'a': 1, 'q': [{'n': 'x', 'r': 2}]}
    """
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            out[key] = merge(old, value)
        elif isinstance(value, list) and isinstance(old, list) and all(
                isinstance(v, Mapping) for v in value + old):
            merged = [merge(o, v) for o, v in zip(old, value, strict=False)]
            out[key] = merged + old[len(value):] + value[len(old):]
        else:
            out[key] = value
    return out


def spec_from_dict(raw: Mapping[str, Any], scale: str = "full") -> WorkloadSpec:
    """Build and validate a spec from parsed TOML (or any mapping).

    The optional ``[ci]`` table holds overrides for the reduced scale the test suite runs;
    ``scale="ci"`` merges it in (:func:`merge`), ``"full"`` ignores it.
    """
    if scale not in ("full", "ci"):
        raise SpecError(f"scale: expected 'full' or 'ci', got {scale!r}")
    if not isinstance(raw, Mapping):
        raise SpecError(f"spec: expected a table, got {raw!r}")
    ci = raw.get("ci", {})
    if not isinstance(ci, Mapping):
        raise SpecError(f"ci: expected a table, got {ci!r}")
    raw = {k: v for k, v in raw.items() if k != "ci"}
    if scale == "ci":
        raw = merge(raw, ci)
    r = _Reader(raw, "")
    name = r.text("name", required=True)
    queues = tuple(_queue(q, f"queues[{i}]") for i, q in enumerate(r.tables("queues")))
    if not queues:
        raise SpecError("queues: at least one queue is required")
    names = [q.name for q in queues]
    if len(set(names)) != len(names):
        raise SpecError(f"queues: duplicate queue names in {names}")
    raw_servers = r.tables("servers") if "servers" in raw else [{"name": "server0"}]
    servers = tuple(_server(s, f"servers[{i}]", names) for i, s in enumerate(raw_servers))
    duration = r.duration("duration", 3600)
    step = r.duration("step", 1)
    spec = WorkloadSpec(
        name=name, queues=queues, servers=servers,
        description=r.text("description"), finding=r.text("finding"),
        variant=r.choice("variant", all_names(), "reference"),
        duration=duration, sample_interval=r.duration("sample_interval", 60), step=step,
        seed=r.integer("seed", 0), retry_delay=_retry_delay(r),
        policy=_policy(r.table("policy"), "policy"),
        actions=tuple(_action(a, f"actions[{i}]", names) for i, a in enumerate(r.tables("actions"))),
        redis=_redis(r.table("redis"), "redis"),
    )
    r.finish()
    _check_times(spec)
    return spec


def _check_times(spec: WorkloadSpec) -> None:
    if spec.duration < 1:
        raise SpecError(f"duration: must be >= 1 s, got {spec.duration}")
    if spec.step < 1:
        raise SpecError(f"step: must be >= 1 s, got {spec.step}")
    if spec.sample_interval < spec.step or spec.sample_interval % spec.step:
        raise SpecError(f"sample_interval: must be a multiple of step ({spec.step} s), "
                        f"got {spec.sample_interval}")


def _retry_delay(r: _Reader) -> int:
    value = r.raw.get("retry_delay", "asynq")
    r.seen.add("retry_delay")
    if value == "asynq":
        return -1
    return parse_duration(value, "retry_delay")


class _Reader:
    """Typed access to one TOML table that remembers which keys were read (unknown → error)."""

    def __init__(self, raw: object, path: str) -> None:
        if not isinstance(raw, Mapping):
            raise SpecError(f"{path or 'spec'}: expected a table, got {raw!r}")
        self.raw: Mapping[str, Any] = raw
        self.path = path
        self.seen: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, default: object) -> Any:
        self.seen.add(key)
        return self.raw.get(key, default)

    def text(self, key: str, default: str = "", required: bool = False) -> str:
        if required and key not in self.raw:
            raise SpecError(f"{self.where(key)}: required")
        value = self.get(key, default)
        if not isinstance(value, str):
            raise SpecError(f"{self.where(key)}: expected a string, got {value!r}")
        return value

    def number(self, key: str, default: float, low: float = 0.0, high: float | None = None) -> float:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SpecError(f"{self.where(key)}: expected a number, got {value!r}")
        if value < low or (high is not None and value > high):
            bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise SpecError(f"{self.where(key)}: must be {bound}, got {value!r}")
        return float(value)

    def integer(self, key: str, default: int, low: int | None = None) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpecError(f"{self.where(key)}: expected an integer, got {value!r}")
        if low is not None and value < low:
            raise SpecError(f"{self.where(key)}: must be >= {low}, got {value!r}")
        return value

    def duration(self, key: str, default: int) -> int:
        return parse_duration(self.get(key, default), self.where(key))

    def choice(self, key: str, options: list[str] | tuple[str, ...], default: str) -> str:
        value = self.text(key, default)
        if value not in options:
            raise SpecError(f"{self.where(key)}: {value!r} is not one of {', '.join(options)}")
        return value

    def table(self, key: str) -> _Reader:
        return _Reader(self.get(key, {}), self.where(key))

    def tables(self, key: str) -> list[Mapping[str, Any]]:
        value = self.get(key, [])
        if not isinstance(value, list):
            raise SpecError(f"{self.where(key)}: expected an array of tables, got {value!r}")
        return value

    def finish(self) -> None:
        unknown = sorted(set(self.raw) - self.seen)
        if unknown:
            raise SpecError(f"{self.path or 'spec'}: unknown field(s) {', '.join(unknown)}")


def _distribution(raw: object, path: str, default: Distribution) -> Distribution:
    if raw is None:
        return default
    if isinstance(raw, int | float | str) and not isinstance(raw, bool):
        raw = {"kind": "fixed", "value": parse_duration(raw, path) if isinstance(raw, str) else raw}
    r = _Reader(raw, path)
    kind = r.choice("kind", ("fixed", "uniform", "exponential", "lognormal"), "fixed")
    dist = Distribution(kind=kind, value=r.number("value", 0), low=r.number("low", 0),
                        high=r.number("high", 0), mean=r.number("mean", 0),
                        median=r.number("median", 0), sigma=r.number("sigma", 0))
    r.finish()
    if kind == "uniform" and dist.high < dist.low:
        raise SpecError(f"{path}.high: must be >= low ({dist.low}), got {dist.high}")
    return dist


def _queue(raw: object, path: str) -> QueueSpec:
    r = _Reader(raw, path)
    name = r.text("name", required=True)
    if not name.strip() or any(c in name for c in "{}:") or any(ord(c) < 0x20 for c in name):
        raise SpecError(f"{path}.name: {name!r} is not a usable queue name")
    a = r.table("arrival")
    arrival = Arrival(kind=a.choice("kind", ("constant", "poisson", "bursts"), "poisson"),
                      rate=a.number("rate", 1.0), burst_rate=a.number("burst_rate", 0.0),
                      burst_every=a.duration("burst_every", 3600),
                      burst_length=a.duration("burst_length", 60), until=a.duration("until", 0))
    a.finish()
    if arrival.kind == "bursts" and arrival.burst_every < 1:
        raise SpecError(f"{path}.arrival.burst_every: must be >= 1 s")
    defaults = QueueSpec(name)
    queue = QueueSpec(
        name=name, arrival=arrival,
        payload=_distribution(r.get("payload", None), f"{path}.payload", defaults.payload),
        duration=_distribution(r.get("duration", None), f"{path}.duration", defaults.duration),
        outcomes=_outcomes(r.get("outcomes", {"success": 1.0}), f"{path}.outcomes"),
        max_retry=r.integer("max_retry", 25, low=0),
        retention=r.duration("retention", 0),
        unique=_unique(r.table("unique")), scheduled=_scheduled(r.table("scheduled")),
        grouped=_grouped(r.table("grouped")),
    )
    r.finish()
    if queue.unique.share + queue.scheduled.share > 1 + 1e-9 or \
            queue.scheduled.share + queue.grouped.share > 1 + 1e-9:
        raise SpecError(f"{path}: scheduled.share + grouped.share must be <= 1")
    return queue


def _outcomes(raw: object, path: str) -> dict[str, float]:
    r = _Reader(raw, path)
    probs = {o: r.number(o, 0.0, 0.0, 1.0) for o in OUTCOMES}
    r.finish()
    total = sum(probs.values())
    if abs(total - 1.0) > 1e-6:
        raise SpecError(f"{path}: probabilities must sum to 1, got {total:g}")
    return probs


def _unique(r: _Reader) -> Unique:
    u = Unique(share=r.number("share", 0.0, 0.0, 1.0), ttl=r.duration("ttl", 3600),
               key_space=r.integer("key_space", 0, low=0))
    r.finish()
    if u.share and u.ttl < 1:
        raise SpecError(f"{r.where('ttl')}: must be >= 1 s, got {u.ttl}")
    return u


def _scheduled(r: _Reader) -> Scheduled:
    s = Scheduled(share=r.number("share", 0.0, 0.0, 1.0),
                  delay=_distribution(r.get("delay", None), r.where("delay"), Scheduled().delay))
    r.finish()
    return s


def _grouped(r: _Reader) -> Grouped:
    g = Grouped(share=r.number("share", 0.0, 0.0, 1.0), groups=r.integer("groups", 1, low=1))
    r.finish()
    return g


def _server(raw: object, path: str, queue_names: list[str]) -> ServerSpec:
    r = _Reader(raw, path)
    name = r.text("name", path.replace("[", "").replace("]", ""))
    workers = r.integer("workers", 10, low=1)
    covered = r.get("queues", None)
    if covered is None:
        pairs = [(q, 1) for q in queue_names]
    elif isinstance(covered, list) and all(isinstance(q, str) for q in covered):
        pairs = [(q, 1) for q in covered]
    elif isinstance(covered, Mapping):
        pairs = [(q, p) for q, p in covered.items()]
    else:
        raise SpecError(f"{path}.queues: expected a list of names or a table name = priority")
    for q, p in pairs:
        if q not in queue_names:
            raise SpecError(f"{path}.queues: unknown queue {q!r} (spec queues: {queue_names})")
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise SpecError(f"{path}.queues.{q}: priority must be an integer >= 1, got {p!r}")
    loops = r.get("loops", list(LOOPS))
    if not isinstance(loops, list) or any(x not in LOOPS for x in loops):
        raise SpecError(f"{path}.loops: expected a list drawn from {', '.join(LOOPS)}, got {loops!r}")
    r.finish()
    return ServerSpec(name, workers, tuple(q for q, _ in pairs), tuple(p for _, p in pairs),
                      tuple(loops))


def _action(raw: object, path: str, queue_names: list[str]) -> Action:
    r = _Reader(raw, path)
    kind = r.choice("action", ACTIONS, "archive-all")
    queue = r.text("queue", queue_names[0])
    if queue not in queue_names:
        raise SpecError(f"{path}.queue: unknown queue {queue!r}")
    state = r.text("state", "")
    if kind in _BULK_STATES and state not in _BULK_STATES[kind]:
        raise SpecError(f"{path}.state: {kind} takes one of {', '.join(_BULK_STATES[kind])}, "
                        f"got {state!r}")
    if kind not in _BULK_STATES and state:
        raise SpecError(f"{path}.state: {kind} takes no state")
    force = r.get("force", False)
    if not isinstance(force, bool):
        raise SpecError(f"{path}.force: expected true or false, got {force!r}")
    action = Action(kind, queue, r.duration("at", 0), r.duration("every", 0), state, force)
    r.finish()
    return action


def _policy(r: _Reader, path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for key in POLICY_FIELDS:
        if key in r.raw:
            out[key] = r.duration(key, 0) if key in _DURATION_POLICY else r.integer(key, 0, low=0)
    r.finish()
    return out


def _redis(r: _Reader, path: str) -> RedisSettings:
    settings = RedisSettings(
        maxmemory=parse_size(r.get("maxmemory", 0), r.where("maxmemory")),
        maxmemory_policy=r.choice("maxmemory_policy",
                                  ("noeviction", "allkeys-lru", "allkeys-lfu", "allkeys-random",
                                   "volatile-lru", "volatile-lfu", "volatile-random", "volatile-ttl"),
                                  "noeviction"))
    r.finish()
    return settings

