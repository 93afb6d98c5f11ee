"""Server operations (T8–T27): processor outcomes, forwarder, janitor, recoverer, aggregator."""

from __future__ import annotations

from broker.base import BrokerBase


class ServerOps(BrokerBase):
    """What Asynq's server loops do to Redis."""
