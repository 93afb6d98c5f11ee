"""Fixtures' plumbing for the tests that run real Asynq through the Go driver.

A missing Go or a failed driver build skips these tests with the reason and how to enable them
— unless ``KEYSIM_REQUIRE_ASYNQ=1`` (CI), which turns the skip into a failure. They run on a
private real Redis (never ``REDIS_URL``: they flush several databases of it).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from broker.asynq_go import DriverUnavailable, build_driver, require_asynq
from broker.servers import RedisServer, ServerUnavailable, start_server

#: Databases of the private server: ours and Asynq's per version, and the findings' one.
DATABASES = {"ours:v0.26.0": 1, "asynq:v0.26.0": 2, "ours:v0.24.0": 3, "asynq:v0.24.0": 4,
             "findings": 5, "unit": 6}


def driver_or_skip(version: str) -> Path:
    """The built driver for ``version``; skip (or fail under KEYSIM_REQUIRE_ASYNQ=1) without."""
    try:
        return build_driver(version)
    except DriverUnavailable as err:
        if require_asynq():
            pytest.fail(f"KEYSIM_REQUIRE_ASYNQ=1 but the Asynq driver is unavailable: {err}")
        pytest.skip(str(err))


def private_server() -> RedisServer:
    """A launched real Redis (REDIS_URL ignored); skip or fail when none can be started."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    try:
        return start_server(env)
    except ServerUnavailable as err:
        if require_asynq() or os.environ.get("KEYSIM_REQUIRE_REDIS", "") not in ("", "0"):
            pytest.fail(f"no real Redis for the Asynq tests: {err}")
        pytest.skip(f"no real Redis server ({err})")


def db_url(server: RedisServer, name: str) -> str:
    """URL of the named database on ``server``."""
    parts = urlsplit(server.url)
    return urlunsplit(parts._replace(path=f"/{DATABASES[name]}"))
