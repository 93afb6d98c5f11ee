"""The TaskMessage codec speaks Asynq's protobuf wire format (spec §1.2).

Golden vectors are built by a few lines of independent wire encoding (tag = number << 3 | wire
type, varints, length prefixes) — not by the generated code — so they pin the field numbers and
scalar types on their own.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.codec import decode_message, encode_message
from broker.proto import taskmessage_pb2
from model.message import TaskMessage

ROOT = Path(__file__).resolve().parent.parent
PROTO = "broker/proto/taskmessage.proto"
INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)

VARINT, LEN, I64, I32 = 0, 2, 1, 5


# --- an independent protobuf wire encoder ----------------------------------------------------
def varint(n: int) -> bytes:
    """Base-128 varint; negative numbers are sign-extended to 64 bits (int32/int64 rule)."""
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def vint(number: int, n: int) -> bytes:
    return tag(number, VARINT) + varint(n)


def vlen(number: int, data: bytes | str) -> bytes:
    raw = data.encode() if isinstance(data, str) else data
    return tag(number, LEN) + varint(len(raw)) + raw


def bare(**fields: Any) -> TaskMessage:
    """A message whose every field is at its proto3 default except ``fields``."""
    base = TaskMessage(type="", payload=None, id="", queue="", retry=0, timeout=0)
    return replace(base, **fields)


# --- golden vectors --------------------------------------------------------------------------
FULL = TaskMessage(
    type="email:send", payload=b'{"to":"a@b"}', id="3f2a", queue="critical", retry=3, retried=1,
    error_msg="smtp: timeout", last_failed_at=1_700_000_000, timeout=60, deadline=1_700_003_600,
    unique_key="asynq:{critical}:unique:email:send:abc", group_key="batch",
    retention=86_400, completed_at=1_700_000_100, headers=(("trace", "x1"), ("user", "7")),
)
# Fields in number order, as protobuf encoders (Asynq's Go one included) write them.
FULL_WIRE = b"".join([
    vlen(1, "email:send"), vlen(2, b'{"to":"a@b"}'), vlen(3, "3f2a"), vlen(4, "critical"),
    vint(5, 3), vint(6, 1), vlen(7, "smtp: timeout"), vint(8, 60), vint(9, 1_700_003_600),
    vlen(10, "asynq:{critical}:unique:email:send:abc"), vint(11, 1_700_000_000), vint(12, 86_400),
    vint(13, 1_700_000_100), vlen(14, "batch"),
    vlen(15, vlen(1, "trace") + vlen(2, "x1")), vlen(15, vlen(1, "user") + vlen(2, "7")),
])


def test_full_message_matches_hand_encoded_bytes() -> None:
    assert encode_message(FULL) == FULL_WIRE
    assert decode_message(FULL_WIRE) == FULL


def test_literal_bytes_of_a_small_message() -> None:
    # By hand: 0a=field 1 LEN, 12=2 LEN, 1a=3 LEN, 22=4 LEN, 28=5 VARINT, 40=8 VARINT;
    # 1800 = 0x708 = 0b1110_0001000 -> 0x88 0x0e.
    msg = TaskMessage(type="t", payload=b"\x00", id="i", queue="q", retry=25, timeout=1800)
    wire = bytes.fromhex("0a0174" "120100" "1a0169" "220171" "2819" "40880e")
    assert encode_message(msg) == wire
    assert decode_message(wire) == msg


SINGLE_FIELDS = [
    ("type", "x", vlen(1, "x")),
    ("payload", b"\xff\x00", vlen(2, b"\xff\x00")),
    ("id", "x", vlen(3, "x")),
    ("queue", "x", vlen(4, "x")),
    ("retry", 300, vint(5, 300)),
    ("retried", 2**31 - 1, vint(6, 2**31 - 1)),
    ("error_msg", "x", vlen(7, "x")),
    ("timeout", 2**40, vint(8, 2**40)),
    ("deadline", 2**40, vint(9, 2**40)),
    ("unique_key", "x", vlen(10, "x")),
    ("last_failed_at", 2**40, vint(11, 2**40)),
    ("retention", 2**40, vint(12, 2**40)),
    ("completed_at", 2**40, vint(13, 2**40)),
    ("group_key", "x", vlen(14, "x")),
    ("headers", (("k", "v"),), vlen(15, vlen(1, "k") + vlen(2, "v"))),
]


@pytest.mark.parametrize(("name", "value", "wire"), SINGLE_FIELDS, ids=[f[0] for f in SINGLE_FIELDS])
def test_each_field_has_asynqs_number_and_type(name: str, value: Any, wire: bytes) -> None:
    msg = bare(**{name: value})
    assert encode_message(msg) == wire
    assert decode_message(wire) == msg


@pytest.mark.parametrize(("name", "number"), [("retry", 5), ("retried", 6), ("timeout", 8),
                                              ("deadline", 9), ("last_failed_at", 11)])
def test_negative_integers_are_plain_varints_not_zigzag(name: str, number: int) -> None:
    # int32/int64 write -1 as ten 0xff-ish bytes; sint32/sint64 would write 0x01.
    wire = tag(number, VARINT) + bytes.fromhex("ffffffffffffffffff01")
    assert encode_message(bare(**{name: -1})) == wire
    assert decode_message(wire) == bare(**{name: -1})


def test_retry_fields_are_int32_and_times_int64() -> None:
    with pytest.raises(ValueError, match=r"TaskMessage\.retry=2147483648 is outside the int32 range"):
        encode_message(bare(retry=2**31))
    with pytest.raises(ValueError, match=r"TaskMessage\.retried=-2147483649 is outside the int32"):
        encode_message(bare(retried=-(2**31) - 1))
    assert encode_message(bare(timeout=2**31)) == vint(8, 2**31)
    with pytest.raises(ValueError, match=r"TaskMessage\.deadline=9223372036854775808 is outside the int64"):
        encode_message(bare(deadline=2**63))


def test_defaults_are_not_written_and_decode_to_proto3_zero() -> None:
    assert encode_message(bare()) == b""
    assert decode_message(b"") == bare()
    # The model's constructor defaults are not proto3 defaults: they are written.
    assert encode_message(bare(retry=25, timeout=1800)) == vint(5, 25) + vint(8, 1800)


def test_nil_and_empty_payload_stay_distinct() -> None:
    assert encode_message(bare(payload=None)) == b""  # absent, as Asynq writes a nil payload
    assert encode_message(bare(payload=b"")) == vlen(2, b"")
    assert decode_message(vlen(2, b"")).payload == b""
    assert decode_message(b"").payload is None


def test_headers_are_written_in_key_order_and_decoded_sorted() -> None:
    msg = bare(headers=(("b", "2"), ("a", "1")))
    wire = vlen(15, vlen(1, "a") + vlen(2, "1")) + vlen(15, vlen(1, "b") + vlen(2, "2"))
    assert encode_message(msg) == wire
    reversed_wire = vlen(15, vlen(1, "b") + vlen(2, "2")) + vlen(15, vlen(1, "a") + vlen(2, "1"))
    assert decode_message(reversed_wire).headers == (("a", "1"), ("b", "2"))


def test_repeated_header_key_on_the_wire_keeps_the_last_value() -> None:
    wire = vlen(15, vlen(1, "k") + vlen(2, "old")) + vlen(15, vlen(1, "k") + vlen(2, "new"))
    assert decode_message(wire).headers == (("k", "new"),)


# --- unknown fields --------------------------------------------------------------------------
UNKNOWN = b"".join([
    vint(16, 7),                                   # varint
    vlen(99, b"future field"),                     # length-delimited
    tag(20, I64) + (1234).to_bytes(8, "little"),   # fixed64
    tag(2000, I32) + (5).to_bytes(4, "little"),    # fixed32, multi-byte tag
])


def test_unknown_fields_from_a_newer_asynq_are_skipped() -> None:
    cut = len(vlen(1, "email:send") + vlen(2, b'{"to":"a@b"}'))  # between fields 2 and 3
    mixed = FULL_WIRE[:cut] + UNKNOWN + FULL_WIRE[cut:] + UNKNOWN
    assert decode_message(mixed) == FULL
    assert decode_message(UNKNOWN) == bare()
    # Re-encoding gives Asynq's canonical form without them.
    assert encode_message(decode_message(mixed)) == FULL_WIRE


def test_header_entry_with_an_extra_field_is_rejected_not_dropped() -> None:
    # The protobuf runtime keeps such an entry aside instead of in the map; losing a header
    # silently would be worse than refusing (Asynq never writes one).
    entry = vlen(1, "k") + vint(3, 9) + vlen(2, "v")
    with pytest.raises(ValueError, match=r"field number\(s\) \[15\] could not be read"):
        decode_message(vlen(15, entry))


# --- bytes that are not a TaskMessage --------------------------------------------------------
@pytest.mark.parametrize(("data", "reason"), [
    (b"\xff", "Error parsing message"),                   # truncated varint tag
    (b"hello world", "Error parsing message"),            # field 13 with the group-end wire type
    (vlen(1, "abc")[:-1], "Error parsing message"),       # length runs past the end
    (vlen(1, b"\xc3\x28"), "Error parsing message"),      # type is not UTF-8
    (vlen(15, vlen(1, b"\xff")), "Error parsing message"),  # header key is not UTF-8
    (vlen(5, b"\x01"), r"field number\(s\) \[5\] could not be read \(wrong wire type"),
    (vint(1, 1) + vint(3, 2), r"field number\(s\) \[1, 3\] could not be read"),
    (b"\x80\x03\x93L\x00\x00\x00", "Error parsing message"),  # a pickle
])
def test_non_messages_raise_value_error(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^not a TaskMessage: .*{reason}"):
        decode_message(data)


def test_decode_requires_bytes() -> None:
    with pytest.raises(TypeError, match="data must be bytes, got str"):
        decode_message("\n\x01t")  # type: ignore[arg-type]


# --- encode errors ---------------------------------------------------------------------------
@pytest.mark.parametrize(("msg", "error", "match"), [
    (bare(type=b"x"), TypeError, r"TaskMessage\.type must be str, got bytes"),
    (bare(queue="\udcff"), ValueError, r"TaskMessage\.queue is not valid UTF-8"),
    (bare(payload="x"), TypeError, r"TaskMessage\.payload must be bytes or None, got str"),
    (bare(retry=True), TypeError, r"TaskMessage\.retry must be int, got bool"),
    (bare(timeout=1.5), TypeError, r"TaskMessage\.timeout must be int, got float"),
    (bare(headers=(("k", "1"), ("k", "2"))), ValueError, r"TaskMessage\.headers has duplicate key 'k'"),
    (bare(headers=(("k",),)), TypeError, r"TaskMessage\.headers entries must be \(key, value\) pairs"),
    (bare(headers=(("k", 1),)), TypeError, r"TaskMessage\.headers\['k'\] must be str, got int"),
    (bare(headers={"k": "v"}), TypeError, r"TaskMessage\.headers must be a tuple .* got dict"),
])
def test_unencodable_fields_are_named(msg: TaskMessage, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        encode_message(msg)


def test_encode_requires_a_task_message() -> None:
    with pytest.raises(TypeError, match="msg must be a TaskMessage, got dict"):
        encode_message({"type": "x"})  # type: ignore[arg-type]


# --- round trip over every field -------------------------------------------------------------
HEADERS = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4).map(
    lambda d: tuple(sorted(d.items())))
MESSAGES = st.builds(
    TaskMessage,
    type=st.text(), payload=st.none() | st.binary(), id=st.text(), queue=st.text(),
    retry=INT32, retried=INT32, error_msg=st.text(), last_failed_at=INT64, timeout=INT64,
    deadline=INT64, unique_key=st.text(), group_key=st.text(), retention=INT64,
    completed_at=INT64, headers=HEADERS,
)


@given(MESSAGES)
def test_every_field_round_trips(msg: TaskMessage) -> None:
    data = encode_message(msg)
    assert decode_message(data) == msg
    assert encode_message(decode_message(data)) == data


@given(MESSAGES, st.binary(max_size=40))
def test_round_trip_survives_unknown_fields(msg: TaskMessage, unknown_payload: bytes) -> None:
    data = encode_message(msg) + vlen(31, unknown_payload) + vint(17, 3)
    assert decode_message(data) == msg


@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_value_error(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except ValueError:
        return
    assert isinstance(msg, TaskMessage)


# --- the generated code is current -----------------------------------------------------------
@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools not installed")
def test_generated_module_matches_the_proto(tmp_path: Path) -> None:
    out = tmp_path / "set.pb"
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I.", f"--descriptor_set_out={out}",
                    PROTO], cwd=ROOT, check=True, capture_output=True)
    from google.protobuf import descriptor_pb2

    fresh = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    # Generated Python code leaves out json_name (derivable from the name); so must we.
    for message in [*fresh.message_type, *(m for t in fresh.message_type for m in t.nested_type)]:
        for field in message.field:
            field.ClearField("json_name")
    committed = descriptor_pb2.FileDescriptorProto.FromString(taskmessage_pb2.DESCRIPTOR.serialized_pb)
    assert committed.name == PROTO
    assert committed == fresh, f"{PROTO} changed: regenerate taskmessage_pb2.py (see the .proto)"
