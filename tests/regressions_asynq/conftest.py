"""Fixtures for the real-Asynq regression tests (see tests/support.py for skip/fail rules)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import db_url, driver_or_skip, go_backend_or_skip, private_server

from broker.asynq_go import AsynqGoBroker
from broker.servers import RedisServer
from model.clock import VirtualClock


@pytest.fixture(scope="session")
def asynq_server() -> Iterator[RedisServer]:
    """A private real Redis, shared by every test of the run."""
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
