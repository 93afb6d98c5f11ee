"""TaskMessage codec — placeholder until the protobuf codec lands (being written now)."""

from __future__ import annotations

import pickle

from model.message import TaskMessage


def encode_message(msg: TaskMessage) -> bytes:
    return pickle.dumps(msg)


def decode_message(data: bytes) -> TaskMessage:
    try:
        value = pickle.loads(data)
    except Exception as err:
        raise ValueError("not a TaskMessage") from err
    if not isinstance(value, TaskMessage):
        raise ValueError("not a TaskMessage")
    return value
