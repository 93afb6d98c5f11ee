"""TaskMessage codec: the protobuf bytes Asynq stores in a task hash's ``msg`` field (spec §1.2).

The wire format is Asynq's ``asynq.TaskMessage`` (see ``broker/proto/taskmessage.proto``), so
bytes written here decode in Asynq and vice versa.

>>> msg = TaskMessage(type="email", payload=b"{}", id="t1", queue="default")
>>> encode_message(msg)[:7]
b'\\n\\x05email'
>>> decode_message(encode_message(msg)) == msg
True

Mapping decisions:

* ``payload=None`` is an absent field (what Asynq writes for a nil payload); ``b""`` is an explicit
  empty field, so the two stay distinct across a round trip.
* Fields left at their proto3 default are not written, and an absent field decodes to that
  default (0 or ""), *not* to the model's constructor defaults (``retry=25``, ``timeout=1800``).
* ``headers`` is a map: keys must be unique; they are encoded and decoded in sorted key order.
* Field numbers this version does not know (a newer Asynq) are skipped on decode, as protobuf
  allows (they are not kept: re-encoding gives Asynq v0.26.0's fields only). A known field number
  that cannot be read (wrong wire type) means the bytes are something else: ``ValueError``.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from broker.proto.taskmessage_pb2 import TaskMessage as TaskMessagePB
from model.message import TaskMessage

_INT32 = 32
_INT64 = 64
# The model's scalar fields: strings, and integers with their protobuf width (int32/int64).
_STRINGS = ("type", "id", "queue", "error_msg", "unique_key", "group_key")
_INTS = {"retry": _INT32, "retried": _INT32, "timeout": _INT64, "deadline": _INT64,
         "last_failed_at": _INT64, "retention": _INT64, "completed_at": _INT64}
_KNOWN_NUMBERS = frozenset(f.number for f in TaskMessagePB.DESCRIPTOR.fields)


def encode_message(msg: TaskMessage) -> bytes:
    """Serialize ``msg`` as Asynq's protobuf ``TaskMessage``.

    Raises ``TypeError``/``ValueError`` naming the field when a value cannot be encoded (wrong
    type, integer outside int32/int64, string that is not valid UTF-8, duplicate header key).

    >>> encode_message(TaskMessage(type="t", payload=None, id="i", queue="q", retry=0, timeout=0))
    b'\\n\\x01t\\x1a\\x01i"\\x01q'
    """
    if not isinstance(msg, TaskMessage):
        raise TypeError(f"msg must be a TaskMessage, got {type(msg).__name__}")
    pb = TaskMessagePB()
    for name in _STRINGS:
        setattr(pb, name, _checked_str(name, getattr(msg, name)))
    for name, bits in _INTS.items():
        setattr(pb, name, _checked_int(name, getattr(msg, name), bits))
    if msg.payload is not None:
        if not isinstance(msg.payload, bytes):
            raise TypeError(f"TaskMessage.payload must be bytes or None, got {type(msg.payload).__name__}")
        pb.payload = msg.payload
    pb.headers.update(_checked_headers(msg.headers))
    # Deterministic: map entries in key order, so equal messages give equal bytes.
    return pb.SerializeToString(deterministic=True)


def decode_message(data: bytes) -> TaskMessage:
    """Parse Asynq's protobuf ``TaskMessage``; ``ValueError`` if ``data`` is not one.

    >>> decode_message(b'\\n\\x01t\\x1a\\x01i"\\x01q').retry  # absent field: proto3 default
    0
    >>> decode_message(b"not protobuf")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: not a TaskMessage: Error parsing message with type 'asynq.TaskMessage': ...
    """
    if not isinstance(data, bytes):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    pb = TaskMessagePB()
    try:
        pb.ParseFromString(data)
    except DecodeError as err:
        raise ValueError(f"not a TaskMessage: {err}") from err
    unknown = UnknownFieldSet(pb)
    numbers = {unknown[i].field_number for i in range(len(unknown))}
    misplaced = sorted(numbers & _KNOWN_NUMBERS)
    if misplaced:
        # protobuf keeps a known field it cannot read as unknown: a wrong wire type, or (upb) a
        # header entry with extra fields. Either way the bytes are not a TaskMessage we can trust.
        raise ValueError(f"not a TaskMessage: field number(s) {misplaced} could not be read "
                         "(wrong wire type or malformed header entry)")
    return TaskMessage(
        type=pb.type,
        payload=pb.payload if pb.HasField("payload") else None,
        id=pb.id,
        queue=pb.queue,
        retry=pb.retry,
        retried=pb.retried,
        error_msg=pb.error_msg,
        last_failed_at=pb.last_failed_at,
        timeout=pb.timeout,
        deadline=pb.deadline,
        unique_key=pb.unique_key,
        group_key=pb.group_key,
        retention=pb.retention,
        completed_at=pb.completed_at,
        headers=tuple(sorted(pb.headers.items())),
    )


def _checked_str(name: str, value: object) -> str:
    """``value`` if it is a str protobuf can encode (UTF-8, so no lone surrogates)."""
    if not isinstance(value, str):
        raise TypeError(f"TaskMessage.{name} must be str, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"TaskMessage.{name} is not valid UTF-8: {value!r}") from err
    return value


def _checked_int(name: str, value: object, bits: int) -> int:
    """``value`` if it is an int (not a bool) within the signed ``bits``-bit range."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"TaskMessage.{name} must be int, got {type(value).__name__}")
    bound = 1 << (bits - 1)
    if not -bound <= value < bound:
        raise ValueError(f"TaskMessage.{name}={value} is outside the int{bits} range")
    return value


def _checked_headers(headers: object) -> dict[str, str]:
    """``headers`` (pairs of str) as a dict; duplicate keys cannot be a protobuf map."""
    if not isinstance(headers, tuple | list):
        raise TypeError(f"TaskMessage.headers must be a tuple of (key, value) pairs, got "
                        f"{type(headers).__name__}")
    result: dict[str, str] = {}
    for pair in headers:
        if not (isinstance(pair, tuple | list) and len(pair) == 2):
            raise TypeError(f"TaskMessage.headers entries must be (key, value) pairs, got {pair!r}")
        key = _checked_str("headers key", pair[0])
        value = _checked_str(f"headers[{key!r}]", pair[1])
        if key in result:
            raise ValueError(f"TaskMessage.headers has duplicate key {key!r}")
        result[key] = value
    return result
