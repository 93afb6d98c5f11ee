"""Where the system under test runs: pooled fakeredis servers, a private real Redis, a Redis
URL, a private local Redis Cluster, or Asynq's own Go code (see ``MachineConfig.backend``).

>>> client = make_client("fakeredis")
>>> client.dbsize()
0
>>> release_client(client)
"""

from __future__ import annotations

from typing import Any

import fakeredis
import redis
from redis.cluster import RedisCluster

from broker import Broker
from broker.scripting import Client
from harness.config import MachineConfig
from harness.fakeserver import new_client
from harness.late_writes import LateWritesBroker
from model.clock import VirtualClock
from model.policy import Policy


def make_client(backend: str) -> Client:
    """An empty Redis database for one run of the machine (on ``cluster``, a cluster client).

    Clients are reused across runs (a fakeredis server once its machine is torn down, see
    :func:`release_client`; one client per real server URL) and emptied with FLUSHALL/FLUSHDB:
    a new fakeredis server builds a new Lua interpreter and a new real client a new connection,
    which cost more than a short example's steps. Redis keeps its script cache across FLUSHDB,
    so scripts are sent once per process (see ``broker.scripting.ScriptRunner.shared``).
    """
    if backend == "fakeredis":
        fake = _FAKE_POOL.pop() if _FAKE_POOL else new_client()
        fake.flushall()
        return fake
    if backend == CLUSTER_BACKEND:
        if backend not in _REAL_CLIENTS:
            _REAL_CLIENTS[backend] = RedisCluster.from_url(_cluster_url())
        client: Client = _REAL_CLIENTS[backend]
    else:
        url = backend if backend.startswith(("redis://", "rediss://", "unix://")) else _server_url()
        if url not in _REAL_CLIENTS:
            _REAL_CLIENTS[url] = redis.Redis.from_url(url)
        client = _REAL_CLIENTS[url]
    client.flushdb()  # on a cluster, on every primary
    return client


def release_client(client: Any) -> None:
    """Hand a finished run's fakeredis client back for the next run (real clients are shared
    already). A client never released is simply not reused, so two live machines never share
    a fakeredis server."""
    if isinstance(client, fakeredis.FakeRedis) and len(_FAKE_POOL) < _FAKE_POOL_SIZE:
        _FAKE_POOL.append(client)


_FAKE_POOL: list[fakeredis.FakeRedis] = []
_FAKE_POOL_SIZE = 4  # servers kept for reuse; machines run one at a time, a few nest
_REAL_CLIENTS: dict[str, Client] = {}


#: The backend that runs Asynq's own code (see ``MachineConfig.backend``).
ASYNQ_BACKEND = "asynq"
#: The backend that runs the broker on a private local Redis Cluster (``broker.cluster``).
CLUSTER_BACKEND = "cluster"
#: Masters of that cluster.
CLUSTER_MASTERS = 3

_SERVER: list[Any] = []
_CLUSTER: list[Any] = []
_GO_BROKERS: dict[str, Any] = {}  # Asynq version -> AsynqGoBroker, one driver per process


def make_broker(config: MachineConfig, clock: VirtualClock) -> Any:
    """The system under test for one run of the machine, on an empty keyspace."""
    if config.broker_factory is not None:
        return config.broker_factory(clock, config.policy)
    if config.backend == ASYNQ_BACKEND:
        return _asynq_broker(config.asynq_version or config.variant, clock, config.policy)
    # Judged against the model: also stage keys written after remove_queue's SCAN.
    kind = LateWritesBroker if config.oracle else Broker
    return kind(make_client(config.backend), config.variant, config.policy, clock)


def _asynq_broker(release: str, clock: VirtualClock, policy: Policy) -> Any:
    """The Go-backed broker of Asynq ``release`` (``v0.23.0``, or an ``asynq-vX.Y.Z``
    variant's name)."""
    from urllib.parse import urlsplit, urlunsplit

    from broker.asynq_go import AsynqGoBroker, version_of

    version = release if release.startswith("v") else version_of(release)
    if version not in _GO_BROKERS:  # each version its own database of the private server
        url = urlsplit(_server_url())._replace(path=f"/{1 + len(_GO_BROKERS)}")
        _GO_BROKERS[version] = AsynqGoBroker(urlunsplit(url), version, policy, clock)
    return _GO_BROKERS[version].begin_run(clock, policy)


def _server_url() -> str:
    """URL of a private real Redis started once per process (REDIS_URL wins)."""
    if not _SERVER:
        from broker.servers import start_server

        _SERVER.append(start_server())
    return str(_SERVER[0].url)


def private_cluster() -> Any:
    """The ``cluster`` backend's local cluster (a ``broker.cluster.LocalCluster`` of
    :data:`CLUSTER_MASTERS` masters), started at the first call in this process and kept until
    it exits (``KEYSIM_SERVER`` picks the binary; ``REDIS_URL`` does not apply). Raises
    ``ServerUnavailable`` when no binary can run one."""
    if not _CLUSTER:
        from broker.cluster import start_cluster

        _CLUSTER.append(start_cluster(CLUSTER_MASTERS))
    return _CLUSTER[0]


def _cluster_url() -> str:
    return str(private_cluster().url)
