"""Input validation shared by the reference model and the brokers: one rule, one place.

Every check raises ``ValueError`` or ``TypeError`` naming the bad parameter, and runs before
anything is written (the queue is not even registered).

>>> check_ttl(0, 1)
Traceback (most recent call last):
...
ValueError: unique ttl must be an int >= 1 s, got 0
>>> check_bulk_state("delete_all", "aggregating", None)
Traceback (most recent call last):
...
ValueError: group is required when state is aggregating (delete_all_tasks)
"""

from __future__ import annotations

import functools

from model import keys
from model.message import TaskMessage
from model.states import TaskState
from model.transitions import bulk_states


def check_queue(queue: object) -> str:
    """A queue name: non-blank, no braces or control characters."""
    return keys.validate_name("queue", queue)


def check_task_id(task_id: object) -> str:
    """A task id: non-blank, no braces or control characters."""
    return keys.validate_name("task id", task_id)


def check_group(group: object, what: str = "group") -> str:
    """A group name; ':' is refused because it separates a group from its aggregation set id."""
    name = keys.validate_name(what, group)
    if ":" in name:
        raise ValueError(f"{what} {name!r} contains ':', which the aggregation-set layout uses")
    return name


def check_set_id(set_id: object) -> str:
    """An aggregation set id (the suffix of ``g:<group>:<set_id>``)."""
    return keys.validate_name("set id", set_id)


def check_message(msg: object) -> TaskMessage:
    """A message whose queue, id, type, payload and group fit the key layout."""
    if not isinstance(msg, TaskMessage):
        raise TypeError(f"msg must be a TaskMessage, got {type(msg).__name__}")
    check_queue(msg.queue)
    check_task_id(msg.id)
    if not isinstance(msg.type, str) or not msg.type:
        raise ValueError(f"task type must be a non-empty string, got {msg.type!r}")
    if msg.payload is not None and not isinstance(msg.payload, bytes):
        raise TypeError(f"payload must be bytes or None, got {type(msg.payload).__name__}")
    if msg.group_key:
        check_group(msg.group_key, "msg.group_key")
    return msg


def check_unique_key(msg: TaskMessage) -> None:
    """A caller-supplied ``msg.unique_key`` must name a lock of the message's own queue."""
    if msg.unique_key and not msg.unique_key.startswith(keys.unique_prefix(msg.queue)):
        raise ValueError(f"msg.unique_key {msg.unique_key!r} is not a lock key of queue "
                         f"{msg.queue!r} (expected prefix {keys.unique_prefix(msg.queue)!r})")


def check_ttl(ttl: object, min_ttl: int) -> int:
    """A unique lock TTL: a whole number of seconds, at least ``min_ttl``."""
    if not isinstance(ttl, int) or isinstance(ttl, bool) or ttl < min_ttl:
        raise ValueError(f"unique ttl must be an int >= {min_ttl} s, got {ttl!r}")
    return ttl


def check_int(what: str, value: object) -> int:
    """A Unix-seconds argument such as ``process_at``, ``retry_at`` or ``cutoff``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{what} must be an int (Unix seconds), got {value!r}")
    return value


def check_text(what: str, value: object) -> str:
    """A free-text argument such as an error message."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    return value


def check_bool(what: str, value: object) -> bool:
    """A flag such as ``is_failure`` or ``force``."""
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be a bool, got {value!r}")
    return value


def check_bytes(what: str, value: object) -> bytes:
    """Raw bytes such as a task result."""
    if not isinstance(value, bytes):
        raise TypeError(f"{what} must be bytes, got {type(value).__name__}")
    return value


@functools.cache
def _accepted(kind: str) -> tuple[TaskState, ...]:
    return bulk_states(kind)


def check_bulk_state(kind: str, state: object, group: object) -> tuple[TaskState, str | None]:
    """The (state, group) of a bulk inspector op ``<kind>_tasks``.

    ``state`` may be a TaskState or its name; a group is required for aggregating tasks and
    refused otherwise.
    """
    if isinstance(state, TaskState):
        parsed = state
    elif isinstance(state, str):
        parsed = TaskState.parse(state)
    else:
        raise TypeError(f"state must be a TaskState, got {type(state).__name__}")
    accepted = _accepted(kind)
    if parsed not in accepted:
        names = ", ".join(s.value for s in accepted)
        raise ValueError(f"state {parsed.value!r} is not accepted by {kind}_tasks; "
                         f"expected one of: {names}")
    if parsed is TaskState.AGGREGATING:
        if group is None:
            raise ValueError(f"group is required when state is aggregating ({kind}_tasks)")
        return parsed, check_group(group)
    if group is not None:
        raise ValueError(f"group must be None unless state is aggregating, got {group!r}")
    return parsed, None
