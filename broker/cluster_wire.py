"""``ClusterWire``: the broker's pipeline (:class:`~broker.wire.Wire`'s methods) on a Redis
Cluster, and :func:`wire_for`, which picks the pipeline a client needs.

Each command goes to the primary that serves its keys' slot, on one :class:`Wire` per node: a
script call by its KEYS (all of a call's keys carry the queue's ``{q}`` hash tag, so they share
one slot), ``asynq:queues`` by its own slot — so a registration and the script it precedes
are two commands, as with Asynq's cluster client, that still travel in one round trip: every
node's part of a batch is sent before any reply is read. Order is kept per node, and commands
on different nodes touch different keys, so splitting a batch changes no reply; the replies
come back in the order the commands were queued.

Routing failures are raised, never returned as replies (a reply error may be a script's own
outcome, which callers judge): :class:`ClusterRoutingError` for a call whose keys span slots
(found before anything is sent), a script with no KEYS (it could run on any node), and any
CROSSSLOT, MOVED, ASK, TRYAGAIN or CLUSTERDOWN reply or a script's access to a key of another
slot or node (``Script attempted to access ...``). A slot that moves while a broker runs is
such a failure too: the wire does not follow redirections.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterCrossSlotError,
    ClusterDownError,
    RedisClusterException,
    TryAgainError,
)

from broker.scripting import Arg
from broker.wire import Wire

_SCRIPT_CALLS = frozenset({"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO"})
#: Reply errors that say the command ran on the wrong node (MovedError is an AskError).
_MISROUTED = (ClusterCrossSlotError, AskError, TryAgainError, ClusterDownError)
#: How a script's error reply starts when it touched a key outside its slot or node.
#: Redis says "Script attempted to access a non local key ...", Valkey "Attempted to access a
#: non local key in a cluster node script": compared case-folded.
_SCRIPT_MISROUTED = "attempted to access a non local key"


class ClusterRoutingError(RedisClusterException):
    """A command could not run on one node of the cluster: its keys span slots, or it reached
    a node that does not serve them. Never a script's own outcome."""


def wire_for(client: Any, hold: bool = False) -> Wire | ClusterWire:
    """The pipeline for ``client``: a :class:`ClusterWire` on a cluster client, else a
    :class:`Wire`."""
    if isinstance(client, RedisCluster):
        return ClusterWire(client, hold=hold)
    return Wire(client, hold=hold)


class ClusterWire:
    """:class:`Wire`'s pipeline over the primaries of ``client`` (see the module docstring).
    ``hold`` and ``spin_us`` are each node's :class:`Wire`'s."""

    def __init__(self, client: RedisCluster, hold: bool = False, spin_us: int | None = None
                 ) -> None:
        self._client = client
        self._hold = hold
        self._spin_us = spin_us
        self._wires: dict[str, Wire] = {}  # by node name, made at a node's first command
        self._route: list[str] = []  # the node of each command queued since the last execute

    def __len__(self) -> int:
        return len(self._route)

    def evalsha(self, sha: str, numkeys: int, *keys_and_args: Arg) -> None:
        """Queue ``EVALSHA sha numkeys keys… args…`` on the node of its keys' slot."""
        self.queue_command(("EVALSHA", sha, numkeys, *keys_and_args))

    def sadd(self, key: str, *members: Arg) -> None:
        """Queue ``SADD key members…``."""
        self.queue_command(("SADD", key, *members))

    def sismember(self, key: str, member: Arg) -> None:
        """Queue ``SISMEMBER key member`` (its reply stays 0 or 1)."""
        self.queue_command(("SISMEMBER", key, member))

    def queue_command(self, command: tuple[Arg, ...]) -> None:
        """Queue one command, given as its words, on the node that serves its keys."""
        node = self._client.nodes_manager.get_node_from_slot(self.slot_of(command))
        wire = self._wires.get(node.name)
        if wire is None:
            wire = self._wires[node.name] = Wire(self._client.get_redis_connection(node),
                                                 hold=self._hold, spin_us=self._spin_us)
        wire.queue_command(command)
        self._route.append(node.name)

    def queue_packed(self, packed: bytes) -> None:
        """Refused: a command already encoded cannot be routed by its keys."""
        raise TypeError("ClusterWire routes commands by their keys: queue them as words "
                        "(queue_command), not packed")

    def slot_of(self, command: tuple[Arg, ...]) -> int:
        """The slot of ``command``'s keys; :class:`ClusterRoutingError` when they span slots
        or there is none."""
        name = _text(command[0]).upper()
        if name in _SCRIPT_CALLS:
            return script_slot(name, command[3:3 + int(command[2])])
        try:
            slot = self._client.determine_slot(*command)
        except RedisClusterException as err:
            raise ClusterRoutingError(f"{name}: {err}") from err
        if slot is None:
            raise ClusterRoutingError(f"{name} has no key to route it by")
        return slot

    def execute(self, raise_on_error: bool = False) -> list[Any]:
        """Send every node's commands, then read each node's replies; return one reply per
        command in the order queued (errors as values, routing failures raised)."""
        if raise_on_error:
            raise ValueError("raise_on_error: ClusterWire returns errors as values only")
        route, self._route = self._route, []
        nodes = list(dict.fromkeys(route))
        try:
            for node in nodes:
                self._wires[node].flush()
            answers = {node: iter(self._wires[node].execute()) for node in nodes}
        except BaseException:
            for node in nodes:  # drops the connections with replies left unread
                self._wires[node].reset()
            raise
        replies = [next(answers[node]) for node in route]
        for reply, node in zip(replies, route, strict=True):
            if is_misrouted(reply):
                raise ClusterRoutingError(f"{node} answered {type(reply).__name__}: {reply}"
                                          ) from reply
        return replies

    def replies(self) -> Generator[Any, None, None]:
        """:meth:`execute`'s replies, one by one."""
        yield from self.execute()

    def reset(self) -> None:
        """Forget what was queued since the last :meth:`execute`."""
        self._route.clear()
        for wire in self._wires.values():
            wire.reset()

    def release(self) -> None:
        """Give every node's held connection back to its pool."""
        for wire in self._wires.values():
            wire.release()


def script_slot(name: str, keys: tuple[Arg, ...]) -> int:
    """The one slot of a script call's ``keys``; :class:`ClusterRoutingError` when they span
    slots or there are none (the script could run on any node).

    >>> script_slot("EVALSHA", ("asynq:{q}:pending", "asynq:{q}:active"))
    11958
    >>> script_slot("EVALSHA", ("asynq:{q}:pending", "asynq:{r}:active"))
    Traceback (most recent call last):
    ...
    broker.cluster_wire.ClusterRoutingError: CROSSSLOT EVALSHA: keys asynq:{q}:pending, \
asynq:{r}:active span slots 11958, 7893
    """
    if not keys:
        raise ClusterRoutingError(f"{name} without KEYS could run on any node: pass a key of "
                                  "the slot the script works in")
    slots = list(dict.fromkeys(key_slot(_bytes(key)) for key in keys))
    if len(slots) > 1:
        raise ClusterRoutingError(f"CROSSSLOT {name}: keys {', '.join(map(_text, keys))} span "
                                  f"slots {', '.join(map(str, slots))}")
    return slots[0]


def is_misrouted(reply: Any) -> bool:
    """Whether ``reply`` is an error that says its command reached the wrong node or spanned
    slots (see the module docstring).

    >>> is_misrouted(redis.ResponseError("ERR Script attempted to access a non local key in a "
    ...                                  "cluster node"))
    True
    >>> is_misrouted(redis.ResponseError("Attempted to access a non local key in a cluster node "
    ...                                  "script: on @user_script:19."))  # Valkey's words
    True
    >>> is_misrouted(redis.ResponseError("ERR user_script:3: boom"))
    False
    """
    if isinstance(reply, _MISROUTED):
        return True
    return isinstance(reply, redis.ResponseError) and _SCRIPT_MISROUTED in str(reply).lower()


def _text(word: Arg) -> str:
    return word.decode(errors="replace") if isinstance(word, bytes) else str(word)


def _bytes(word: Arg) -> bytes:
    return word if isinstance(word, bytes) else str(word).encode()
