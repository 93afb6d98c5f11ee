"""``Broker``: Asynq's key protocol on any Redis client, in a chosen variant."""

from __future__ import annotations

from broker.client_ops import ClientOps
from broker.inspector_ops import InspectorOps
from broker.server_ops import ServerOps


class Broker(ClientOps, ServerOps, InspectorOps):
    """Every operation of the transition table as an atomic Lua script over Asynq's key layout.

    ``Broker(client, variant="reference", policy=None, clock=None)``: ``client`` is a
    ``redis.Redis`` (or ``fakeredis.FakeRedis``); ``variant`` a name from
    ``broker.variants.all_names()``; ``policy`` defaults to the variant's; ``clock`` is the
    shared :class:`~model.clock.VirtualClock` (a new one when omitted).

    >>> import fakeredis
    >>> from model import TaskMessage
    >>> b = Broker(fakeredis.FakeRedis())
    >>> b.enqueue(TaskMessage(type="email", payload=b"hi", id="t1", queue="default"))
    >>> b.snapshot("default").members("asynq:{default}:pending")
    ('t1',)
    """
