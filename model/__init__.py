"""The formal model of Asynq's task lifecycle: states, the transition table, policy, the
reference model, invariants and the keyspace snapshot they all speak. Pure Python, no Redis."""

from model.clock import VirtualClock
from model.message import TaskMessage
from model.policy import ASYNQ_POLICY, Policy
from model.snapshot import KeyEntry, KeyspaceSnapshot, KeyType
from model.states import Actor, TaskState
from model.transitions import TRANSITIONS, Outcome, Transition

__all__ = [
    "ASYNQ_POLICY",
    "TRANSITIONS",
    "Actor",
    "KeyEntry",
    "KeyType",
    "KeyspaceSnapshot",
    "Outcome",
    "Policy",
    "TaskMessage",
    "TaskState",
    "Transition",
    "VirtualClock",
]
