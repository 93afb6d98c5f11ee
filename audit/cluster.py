"""``keysim audit`` of a Redis Cluster: every master scanned, one merged report.

Given any node's URL, :func:`cluster_masters` finds out (``INFO cluster``) whether the server is
a cluster node and, if so, which masters serve which slots (``CLUSTER SLOTS``). Then:

* every master is surveyed on its own (SCAN of ``asynq:*`` there, :func:`audit.ownership.survey`);
  every queue's keys carry the hash tag ``{<queue>}`` and so live on the one master that serves
  that tag's slot, and so do all the readings of a key that several queue names could own (the
  slot is decided by the text up to the first ``}``, the same for each reading);
* each queue is audited on its master (:class:`audit.engine.QueueAudit`, unchanged), through a
  read-only client of that node that reads ``asynq:queues`` — which lives in a slot of its own,
  usually on another master — from the node that serves it;
* the global keys found on every master (``asynq:queues``, the registries, scheduler history,
  the rest) are accounted together (:mod:`audit.registry`), each read routed to the master of
  its slot, so a registry and the member keys it names are compared wherever they live.

The queue reports, unattributed keys and global keys are merged into one
:class:`~audit.engine.AuditResult`; progress goes to ``progress`` (stderr), one line per master.
A queue whose name makes its keys hash by something other than one tag (a name starting with
``}``) has keys on several masters: a read of one on the wrong master is refused by the server
and stops the audit (exit 2); Asynq cannot run such a queue on a cluster either.

Fix plans are per server (a plan names one ``run_id``, every guard runs there), so
``--fix-plan`` and ``--apply`` refuse a cluster (:data:`NO_CLUSTER_PLAN`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO, cast
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.crc import key_slot

from audit.capabilities import probe
from audit.engine import (
    AuditOptions,
    AuditResult,
    QueueAudit,
    QueueReport,
    UnknownQueue,
    scan_raw,
    server_name,
)
from audit.ownership import Survey, Unattributed, survey
from audit.readonly import connect
from audit.registry import account_registries
from audit.taskread import TaskReader
from broker.base import text
from model import keys

#: Why a cluster gets no fix plan (``--fix-plan``, ``--apply``: exit code 2).
NO_CLUSTER_PLAN = ("a fix plan names one server and runs every guard there, but on a Redis "
                   "Cluster each guard must run on the master that serves its key: fix plans "
                   "are not made or applied on a cluster")


@dataclass(frozen=True)
class Master:
    """One master of the cluster: ``name`` (host:port), a URL for it (the seed's credentials),
    its node id and the slot ranges (first, last) it serves."""

    name: str
    url: str
    node_id: str
    slots: tuple[tuple[int, int], ...]

    def serves(self, slot: int) -> bool:
        return any(first <= slot <= last for first, last in self.slots)

    @property
    def slot_text(self) -> str:
        return ",".join(f"{a}-{b}" for a, b in self.slots)


def cluster_masters(client: redis.Redis, url: str) -> list[Master]:
    """The masters of the cluster ``client`` (connected to ``url``) belongs to, ordered by their
    first slot; ``[]`` for a server that is no cluster node (or refuses ``INFO``)."""
    try:
        enabled = client.info("cluster").get("cluster_enabled")
    except redis.exceptions.NoPermissionError:
        return []
    if str(enabled) != "1":
        return []
    ranges: dict[tuple[str, str], list[tuple[int, int]]] = {}
    try:
        slots: list[Any] = cast(Any, client).execute_command("CLUSTER", "SLOTS")  # raw: untyped
    except redis.exceptions.NoPermissionError as err:
        raise redis.exceptions.NoPermissionError(
            f"{err}; a cluster's audit also needs +cluster|slots") from None
    for first, last, owner, *_replicas in slots:
        host, port, node_id = text(owner[0]), int(owner[1]), text(owner[2])
        ranges.setdefault((f"{host}:{port}", node_id), []).append((int(first), int(last)))
    masters = [Master(name, node_url(url, name), node_id, tuple(sorted(slots)))
               for (name, node_id), slots in ranges.items()]
    return sorted(masters, key=lambda m: m.slots[0])


def node_url(seed: str, address: str) -> str:
    """``seed``'s URL (scheme, credentials, options) pointed at ``address`` (host:port).

    >>> node_url("redis://u:pw@10.0.0.1:7000/0?x=1", "10.0.0.2:7001")
    'redis://u:pw@10.0.0.2:7001/0?x=1'
    >>> node_url("unix:///tmp/r.sock", "127.0.0.1:7001")
    'redis://127.0.0.1:7001'
    """
    parts = urlsplit(seed)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{address}" if userinfo else address
    if parts.scheme == "unix":  # the other nodes are reached over TCP
        return urlunsplit(("redis", netloc, "", "", ""))
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def cluster_target(target: str, masters: Sequence[Master]) -> str:
    """The report's name for the cluster reached through ``target`` (a masked URL)."""
    shown = ", ".join(f"{m.name} slots {m.slot_text}" for m in masters)
    return f"{target} (Redis Cluster, {len(masters)} masters: {shown})"


class NodeClient(redis.Redis):
    """A read-only client of one master that reads ``asynq:queues`` from ``home``, the client
    of the master that serves its slot (``None``: this one)."""

    def __init__(self, node: redis.Redis, home: redis.Redis | None) -> None:
        super().__init__(connection_pool=node.connection_pool)
        self._home = home

    def smembers(self, name: Any) -> Any:
        if self._home is not None and name == keys.ALL_QUEUES:
            return self._home.smembers(name)
        return super().smembers(name)

    def sismember(self, name: Any, value: Any) -> Any:
        if self._home is not None and name == keys.ALL_QUEUES:
            return self._home.sismember(name, value)
        return super().sismember(name, value)


class RoutedReads:
    """The reads of :mod:`audit.registry` on a cluster: ``pipeline(transaction=False)`` whose
    commands each go to the master of their key's slot, replies back in the order queued."""

    def __init__(self, masters: Sequence[Master], clients: dict[str, redis.Redis]) -> None:
        self._masters, self._clients = masters, clients

    def client_for(self, key: str | bytes) -> redis.Redis:
        raw = key if isinstance(key, bytes) else key.encode("utf-8", "surrogateescape")
        slot = key_slot(raw)
        master = next((m for m in self._masters if m.serves(slot)), None)
        if master is None:  # a cluster whose slots are not all served
            raise redis.exceptions.ClusterError(f"no master serves slot {slot} (of {raw!r})")
        return self._clients[master.name]

    def pipeline(self, transaction: bool = False) -> _RoutedPipeline:
        if transaction:
            raise ValueError("a cluster's reads span masters: no transaction")
        return _RoutedPipeline(self)


class _RoutedPipeline:
    """Records ``pipe.<command>(key, …)`` calls; :meth:`execute` runs one pipeline per master."""

    def __init__(self, routes: RoutedReads) -> None:
        self._routes = routes
        self._calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, command: str) -> Callable[..., None]:
        def queue(*args: Any, **kwargs: Any) -> None:
            self._calls.append((command, args, kwargs))
        return queue

    def execute(self, raise_on_error: bool = True) -> list[Any]:
        pipes: dict[int, Any] = {}
        route: list[int] = []
        for command, args, kwargs in self._calls:
            client = self._routes.client_for(args[0])
            pipe = pipes.setdefault(id(client), client.pipeline(transaction=False))
            getattr(pipe, command)(*args, **kwargs)
            route.append(id(client))
        self._calls = []
        answers = {node: iter(pipe.execute(raise_on_error=raise_on_error))
                   for node, pipe in pipes.items()}
        return [next(answers[node]) for node in route]


def audit_cluster(client: redis.Redis, masters: Sequence[Master],
                  options: AuditOptions | None = None,
                  progress: TextIO | None = None) -> AuditResult:
    """Audit every master of the cluster ``client`` belongs to (module docstring)."""
    opts = options or AuditOptions()
    started = time.monotonic()
    say = (lambda line: print(f"keysim audit: {line}", file=progress, flush=True)) \
        if progress is not None else (lambda line: None)
    clients = {m.name: connect(m.url) for m in masters}
    try:
        return _audit(masters, clients, opts, say, started)
    finally:
        for node in clients.values():
            node.close()


def _audit(masters: Sequence[Master], clients: dict[str, redis.Redis], opts: AuditOptions,
           say: Callable[[str], None], started: float) -> AuditResult:
    routes = RoutedReads(masters, clients)
    home = routes.client_for(keys.ALL_QUEUES)
    nodes = {m.name: NodeClient(clients[m.name], None if clients[m.name] is home else home)
             for m in masters}
    surveys: dict[str, Survey] = {}
    for m in masters:
        say(f"master {m.name} (slots {m.slot_text}): scanning {keys.NAMESPACE}*")
        surveys[m.name] = survey(nodes[m.name], scan_raw(nodes[m.name], keys.NAMESPACE + "*", opts))
    found = sorted({q for s in surveys.values() for q in s.queues})
    for queue in opts.queues:
        if queue not in found:
            known = ", ".join(repr(text(q)) for q in sorted(home.smembers(keys.ALL_QUEUES)))
            raise UnknownQueue(f"no queue {queue!r}: it is not in {keys.ALL_QUEUES} and has no "
                               f"key on any master (registered queues: {known or 'none'})")
    queues = list(opts.queues) or found
    result = AuditResult([])
    for m in masters:
        mine = [q for q in queues if m.serves(key_slot(_raw(keys.pending(q))))]
        tick = time.monotonic()
        reports = _audit_master(nodes[m.name], mine, surveys[m.name], opts, result)
        result.queues += reports
        result.unattributed += [u for u in _unattributed(surveys[m.name])
                                if not opts.queues or set(u.candidates) & set(opts.queues)]
        say(f"master {m.name} (slots {m.slot_text}): {len(reports)} queue(s), "
            f"{sum(r.keys for r in reports)} key(s), {sum(len(r.findings) for r in reports)} "
            f"finding(s), {time.monotonic() - tick:.1f} s")
    result.queues.sort(key=lambda r: r.queue)
    if not opts.queues:
        now_ms = opts.now_ms if opts.now_ms is not None else int(time.time() * 1000)
        global_keys = [k for m in masters for k in surveys[m.name].global_keys]
        result.registries = account_registries(cast(redis.Redis, routes), global_keys, now_ms,
                                               opts.registry_grace_s)
        result.unattributed += result.registries.unrecognised
        say(f"global keys on every master: {result.registries.keys} key(s), "
            f"{len(result.registries.findings)} finding(s)")
    result.unattributed.sort(key=lambda u: u.key)
    result.seconds = time.monotonic() - started
    _server_facts(list(clients.values()), result)
    return result


def _audit_master(node: NodeClient, queues: list[str], found: Survey, opts: AuditOptions,
                  result: AuditResult) -> list[QueueReport]:
    """The reports of ``queues`` (all served by ``node``). ``result`` says how deadlines were
    read and candidates confirmed: as on the first master audited, unless one was read with
    less (a note, no MULTI/EXEC)."""
    if not queues:
        return []
    caps = probe(node, _raw(keys.pending(queues[0])))  # a key of this master's slots
    reader = TaskReader(node, opts.reads, caps.expiry.command)
    reports = [QueueAudit(node, q, opts, reader, found.groups.get(q), caps=caps,
                          ownership=found.ownership).run() for q in queues]
    if not result.reads or caps.expiry.note or not caps.atomic:
        result.reads, result.capabilities = reader.mode, caps
    return reports


def _unattributed(found: Survey) -> list[Unattributed]:
    return found.ownership.ambiguous() + found.ownership.unrecognised()


def _server_facts(clients: list[redis.Redis], result: AuditResult) -> None:
    """Version and name of the first master; ``used_memory``: the sum over every master."""
    try:
        infos = [c.info("server") | c.info("memory") for c in clients]
    except redis.exceptions.NoPermissionError:
        return
    result.redis_version = str(infos[0].get("redis_version", ""))
    result.server = server_name(infos[0])
    if all("used_memory" in info for info in infos):
        result.used_memory = sum(int(info["used_memory"]) for info in infos)


def _raw(key: str) -> bytes:
    return key.encode("utf-8", "surrogateescape")

