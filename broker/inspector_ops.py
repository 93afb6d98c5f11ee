"""Inspector operations (T28–T41): per-task and bulk delete/archive/run, queue removal."""

from __future__ import annotations

from broker.base import BrokerBase


class InspectorOps(BrokerBase):
    """What Asynq's ``Inspector`` does to Redis."""
