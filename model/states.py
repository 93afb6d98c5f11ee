"""Task states of Asynq's lifecycle (spec §2.1) and the actors that move tasks between them."""

from __future__ import annotations

from enum import StrEnum


class TaskState(StrEnum):
    """Where a task lives. The value is exactly the string Asynq stores in the hash's ``state``.

    ``DELETED`` is the terminal pseudo-state: no hash, no index membership, no keys at all.

    >>> TaskState("archived") is TaskState.ARCHIVED
    True
    """

    PENDING = "pending"
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    RETRY = "retry"
    ARCHIVED = "archived"
    COMPLETED = "completed"
    AGGREGATING = "aggregating"
    DELETED = "deleted"

    @classmethod
    def parse(cls, name: str) -> TaskState:
        """Return the state called ``name``; raise ``ValueError`` naming the bad value otherwise."""
        try:
            return cls(name)
        except ValueError:
            known = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown task state {name!r}; expected one of: {known}") from None

    @property
    def stored(self) -> bool:
        """True when a task in this state has a hash in Redis."""
        return self is not TaskState.DELETED


# Tuples, not sets: callers iterate them, and a set of strings iterates in a different order
# in every process.
#: States whose members live in a list named after the state (``asynq:{q}:<state>``).
LIST_STATES: tuple[TaskState, ...] = (TaskState.PENDING, TaskState.ACTIVE)
#: States whose members live in a sorted set named after the state.
ZSET_STATES: tuple[TaskState, ...] = (
    TaskState.SCHEDULED, TaskState.RETRY, TaskState.ARCHIVED, TaskState.COMPLETED
)
#: States whose members sit in exactly one index, named after the state (lists, then zsets).
INDEXED_STATES: tuple[TaskState, ...] = LIST_STATES + ZSET_STATES
#: Every state in which a task hash exists.
LIVE_STATES: tuple[TaskState, ...] = tuple(s for s in TaskState if s.stored)


class Actor(StrEnum):
    """Who performs an operation: the Asynq client, a server's background loops, or the inspector."""

    CLIENT = "client"
    SERVER = "server"
    INSPECTOR = "inspector"
