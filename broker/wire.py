"""``Wire``: a pipeline without redis-py's per-command work, on any redis-py client; on a real
Redis, with a client that answers fast.

Two users: the simulator streams thousands of script calls per batch through it
(``simulations.batch``), and a :class:`broker.Broker` sends each script call as one small
batch (with the keyspace read the stateful machine's ``harness.observe.Observer`` adds to it) —
the machine makes one or two such round trips per step, so their latency is most of its time on
a real server.

Waiting for a reply, a blocked process is put to sleep and woken by the kernel when the reply
lands; on an idle virtual machine that wake-up can cost more than the server's work. So a read
first polls the socket without blocking for up to ``spin_us`` microseconds, then blocks as
usual. The replies are the same either way; only the latency and the client's CPU time change.
Measured loopback round trips (redis-py, a blocking and a polling ``Wire``) are in
BENCHMARKS.md, "Round trip".
"""

from __future__ import annotations

import os
import socket
import time
import weakref
from collections.abc import Callable, Generator, Iterator
from typing import Any, cast

import hiredis
import redis
from redis._parsers.base import BaseParser

from broker.scripting import Arg

#: Bytes read from the socket at a time by :class:`Wire`.
_READ_CHUNK = 1 << 17
#: :class:`Wire` sends what is queued once it reaches this many bytes.
_SEND_EVERY = 1 << 15
#: RESP encoding of one command (hiredis's stub types the argument as a 1-tuple).
pack_command = cast(Callable[[tuple[Arg, ...]], bytes], hiredis.pack_command)
#: Per client, a function that hands one command, as its words, straight to an in-process
#: server (see :func:`hand_over_to`).
_HANDOVERS: weakref.WeakKeyDictionary[Any, Callable[[Any, list[bytes]], None]] = \
    weakref.WeakKeyDictionary()


def hand_over_to(client: Any, handover: Callable[[Any, list[bytes]], None]) -> None:
    """Make every :class:`Wire` built on ``client`` from now on give each command to
    ``handover(connection, words)`` instead of encoding it as RESP for the connection to send:
    for an in-process server (``harness.fakeserver.hand_over``) that would only parse the bytes
    back into words. ``handover`` must run the command and queue its reply for the
    connection's ``read_response``, as sending it would have."""
    _HANDOVERS[client] = handover


def command_words(command: tuple[Arg, ...]) -> list[bytes]:
    """The words of ``command`` as the server receives them, encoded as :data:`pack_command`
    encodes them.

    >>> command_words(("SADD", "s", 1, 2.5, b"x"))
    [b'SADD', b's', b'1', b'2.5', b'x']
    >>> command_words(("SADD", "s", None))
    Traceback (most recent call last):
    ...
    TypeError: command word None: must be str, int, float or bytes
    """
    return [_word(value) for value in command]


def _word(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(value)).encode()
    if isinstance(value, float):
        return repr(value).encode()
    if isinstance(value, memoryview):
        return value.tobytes()
    raise TypeError(f"command word {value!r}: must be str, int, float or bytes")


#: How long (µs) :class:`Wire` polls the socket for a reply before it blocks in the kernel.
SPIN_US = 1000


def default_spin_us() -> int:
    """:data:`SPIN_US` when this process may run on more than one CPU, else 0: on a single CPU
    a polling client only delays the server it waits for."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return SPIN_US if cpus > 1 else 0


def wire_capable(client: redis.Redis) -> bool:
    """Whether ``client`` talks RESP2 over a real socket with bytes replies — what
    :class:`Wire` reproduces. fakeredis (no socket), ``decode_responses`` and RESP3 are not."""
    pool = getattr(client, "connection_pool", None)
    cls = getattr(pool, "connection_class", None)
    if pool is None or not isinstance(cls, type) or not issubclass(cls, redis.connection.AbstractConnection):
        return False
    options = pool.connection_kwargs
    return (cls.__module__ == "redis.connection" and not options.get("decode_responses")
            and str(options.get("protocol") or 2) == "2")


class Wire:
    """A pipeline without redis-py's per-command work. Commands are packed by hiredis as they
    are queued and streamed to the server every ``send_every`` bytes on one of the client's
    pooled connections (so Redis runs the first scripts while the simulator builds the next:
    the two processes overlap); :meth:`execute` sends the rest and reads every reply. Order is
    kept, and queued commands never depend on replies, so streaming changes nothing but timing.

    Replies are raw values as a redis-py pipeline returns them with ``raise_on_error=False``
    before its response callbacks (bytes, int, None, lists; error replies as redis-py's
    exception objects, built by redis-py's own parser). For the commands it offers,
    ``evalsha``, ``sadd`` and ``sismember``, the callbacks change nothing but SISMEMBER's 0/1
    into a bool, so the replies are the pipeline's.

    How replies are read depends on the client. A plain socket client (:func:`wire_capable`)
    is read straight from the connection's socket (redis-py's ``_sock``) by a hiredis reader,
    polling before it blocks (``spin_us``, see the module docstring); redis-py's own parser
    never holds bytes between requests, so bypassing it is safe. Any other client (fakeredis,
    ``decode_responses``, RESP3) is read through its connection's ``read_response``, one reply
    per command; an in-process server can take the commands as words (:func:`hand_over_to`).

    ``hold``: keep one connection from one batch to the next (a broker's Wire does); it goes
    back to the pool when the Wire is gone or on :meth:`release`.

    >>> import fakeredis
    >>> wire = Wire(fakeredis.FakeRedis())
    >>> wire.sadd("s", "a", "b"); wire.sismember("s", "b"); wire.evalsha("0" * 40, 0)
    >>> added, member, missing = wire.execute()
    >>> added, member, type(missing).__name__
    (2, 1, 'NoScriptError')
    """

    def __init__(self, client: redis.Redis, send_every: int = _SEND_EVERY,
                 spin_us: int | None = None, hold: bool = False) -> None:
        if send_every < 1:
            raise ValueError(f"send_every must be >= 1, got {send_every}")
        spin_us = default_spin_us() if spin_us is None else spin_us
        if spin_us < 0:
            raise ValueError(f"spin_us must be >= 0, got {spin_us}")
        self._spin_ns = spin_us * 1000
        self._raw = wire_capable(client)  # read replies straight from the socket
        self._handover = None if self._raw else _HANDOVERS.get(client)
        self._pool = client.connection_pool
        self._send_every = send_every
        self._conn: Any = None  # checked out from the first send until the replies are read
        self._hold = hold  # keep the connection from one execute to the next
        self._pid = os.getpid()  # the process the connection was checked out in
        self._in_flight = False  # part of the batch was sent: its replies are on the socket
        self._give_back_later: weakref.finalize[Any, Any] | None = None
        self._packed: list[bytes | list[bytes]] = []  # RESP, or words for the handover
        self._unsent = 0  # bytes in _packed
        self._count = 0  # commands since the last execute
        self._buffer = bytearray(_READ_CHUNK if self._raw else 0)  # only the socket reader uses it

    def __len__(self) -> int:
        return self._count

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Arg) -> None:
        """Queue ``EVALSHA sha numkeys keys… args…``."""
        self.queue_command(("EVALSHA", sha, numkeys, *keys_and_args))

    def sadd(self, key: str, *members: Arg) -> None:
        """Queue ``SADD key members…``."""
        self.queue_command(("SADD", key, *members))

    def sismember(self, key: str, member: Arg) -> None:
        """Queue ``SISMEMBER key member`` (its reply stays 0 or 1: no bool callback)."""
        self.queue_command(("SISMEMBER", key, member))

    def queue_command(self, command: tuple[Arg, ...]) -> None:
        """Queue one command given as its words (hiredis encodes str as UTF-8 and numbers
        as redis-py does)."""
        if self._handover is None:
            self.queue_packed(pack_command(command))
            return
        words = command_words(command)
        self._queue(words, sum(map(len, words)))

    def queue_packed(self, packed: bytes) -> None:
        """Queue one command already encoded as RESP (see ``hiredis.pack_command``)."""
        self._queue(packed, len(packed))

    def _queue(self, item: bytes | list[bytes], size: int) -> None:
        self._packed.append(item)
        self._count += 1
        self._unsent += size
        if self._unsent >= self._send_every:
            self._send()

    def flush(self) -> None:
        """Send what is queued now, without reading replies (:meth:`execute` reads them): a
        caller with batches for several servers sends them all before it waits for one."""
        if self._packed:
            self._send()

    def _send(self) -> None:
        items = list(self._packed)
        self._packed.clear()
        self._unsent = 0
        if self._conn is not None and self._pid != os.getpid():
            self._conn = self._reader = None  # inherited through fork: the parent's to use
        if self._conn is None:
            self._conn = self._pool.get_connection()
            self._pid = os.getpid()
            if self._hold:  # the pool gets it back when this Wire is gone
                self._give_back_later = weakref.finalize(self, self._pool.release, self._conn)
        try:
            self._in_flight = True
            if self._handover is None:
                self._conn.send_packed_command([b"".join(cast(list[bytes], items))],
                                               check_health=False)
            else:
                for item in items:
                    if isinstance(item, bytes):
                        self._conn.send_packed_command([item], check_health=False)
                    else:
                        self._handover(self._conn, item)
        except BaseException:
            self._drop()
            raise

    def execute(self, raise_on_error: bool = False) -> list[Any]:
        """Send what is left, return one reply per command since the last call (errors as
        values)."""
        if raise_on_error:
            raise ValueError("raise_on_error: Wire returns errors as values only")
        return list(self.replies())

    def replies(self) -> Generator[Any, None, None]:
        """As :meth:`execute`, but each reply is yielded as soon as it has arrived, so the
        caller works on the first replies while Redis still runs the later commands. Stopping
        early drops the connection (its unread replies would confuse the next user)."""
        count, self._count = self._count, 0
        if not count:
            return
        self.flush()
        conn, read_all = self._conn, False
        try:
            if self._raw:
                yield from self._read(conn._sock, count)
            else:
                yield from _read_each(conn, count)
            read_all = True
        finally:
            self._in_flight = False
            if not read_all:  # an error, or a caller that stopped: replies stay on the socket
                conn.disconnect()
            if not read_all or not self._hold:
                self._release()

    def reset(self) -> None:
        """Forget what was queued since the last :meth:`execute` (after a failure while
        queueing); a connection that already carries part of it is dropped."""
        if self._in_flight:
            self._drop()
        self._packed.clear()
        self._unsent = self._count = 0

    def release(self) -> None:
        """Give a held connection back to the pool now (the next batch borrows one again)."""
        if self._in_flight:
            self._drop()
        else:
            self._release()

    def _drop(self) -> None:
        """Forget the connection (and what was queued) after a failed send."""
        conn = self._conn
        self._packed.clear()
        self._unsent = self._count = 0
        self._in_flight = False
        if conn is not None:
            conn.disconnect()
            self._release()

    def _release(self) -> None:
        """Hand the connection back to the pool."""
        conn, self._conn = self._conn, None
        if self._give_back_later is not None:
            self._give_back_later.detach()
            self._give_back_later = None
        if conn is not None:
            self._pool.release(conn)

    def _read(self, sock: socket.socket, count: int) -> Iterator[Any]:
        reader = hiredis.Reader(replyError=BaseParser.parse_error)
        gets, view = reader.gets, memoryview(self._buffer)
        while True:
            reply = gets()
            while reply is not False:  # every complete reply in the buffer
                yield reply
                count -= 1
                if not count:
                    return
                reply = gets()
            try:
                n = self._receive(sock)
            except OSError as err:
                raise redis.ConnectionError(f"reading batch replies: {err}") from err
            if n == 0:
                raise redis.ConnectionError("connection closed while reading batch replies")
            reader.feed(view, 0, n)  # type: ignore[arg-type]  # the stub omits buffers

    def _receive(self, sock: socket.socket) -> int:
        """``sock.recv_into`` the buffer, polling first (see the module docstring). Only a plain
        socket is polled — its file descriptor carries the protocol's own bytes (TLS would
        not) — and only while redis-py keeps it non-blocking (it does: it has a timeout)."""
        if self._spin_ns and type(sock) is socket.socket and sock.gettimeout() is not None:
            fd, buffers = sock.fileno(), (self._buffer,)
            deadline = time.perf_counter_ns() + self._spin_ns
            while True:
                try:
                    return os.readv(fd, buffers)
                except BlockingIOError:
                    if time.perf_counter_ns() >= deadline:
                        break
        return sock.recv_into(self._buffer)


def _read_each(conn: Any, count: int) -> Iterator[Any]:
    """``count`` replies through the connection's own parser, error replies as values."""
    for _ in range(count):
        try:
            yield conn.read_response()
        except redis.ResponseError as err:
            yield err
