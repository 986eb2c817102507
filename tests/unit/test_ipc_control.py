"""The worker control link: typed events, the wire format, any byte split, malformed input."""

from __future__ import annotations

import json
import struct

import pytest

from remotemedia.errors import LinkProtocolError, RemoteMediaError
from remotemedia.ipc.control import (
    MAX_MESSAGE,
    Config,
    Count,
    Credit,
    Fatal,
    InputReady,
    LinkEvent,
    LinkProtocol,
    OutputReady,
    Progress,
    Ready,
    Side,
    Stop,
)

CONFIG = Config(
    node_class="remotemedia.nodes.text:Echo",
    node_id="échø",
    params={"rate_hz": 16000, "nested": {"a": [1, 2.5, None, True]}},
    session_id="s1",
    prefix="rm_",
    root="/tmp/rm",
    iox_node="rm-worker-s1_echo-1",
    input="s1_echo_input",
    output="s1_echo_output",
)
RUNTIME_EVENTS: list[LinkEvent] = [CONFIG, InputReady(), Credit(), Stop()]
WORKER_EVENTS: list[LinkEvent] = [
    Progress("downloading weights (3 of 4 files)"),
    Count("full_window_fallback", 2),
    Ready(),
    OutputReady(),
    Fatal("FileNotFoundError: weights.bin"),
]


def _frame(body: bytes) -> bytes:
    return b"J" + struct.pack("<I", len(body)) + body


def _message(fields: object) -> bytes:
    return _frame(json.dumps(fields).encode())


def _decode_all(side: Side, data: bytes) -> list[LinkEvent]:
    link = LinkProtocol(side)
    link.receive_data(data)
    return link.events()


def _sender(event: LinkEvent) -> LinkProtocol:
    return LinkProtocol(Side.RUNTIME if event in RUNTIME_EVENTS else Side.WORKER)


def _receiver(event: LinkEvent) -> Side:
    return Side.WORKER if event in RUNTIME_EVENTS else Side.RUNTIME


@pytest.mark.parametrize("event", RUNTIME_EVENTS + WORKER_EVENTS, ids=repr)
def test_link_event_round_trips(event: LinkEvent) -> None:
    data = _sender(event).encode(event)
    assert _decode_all(_receiver(event), data) == [event]


def test_link_wire_format_is_the_opcodes_and_json_messages() -> None:
    runtime, worker = LinkProtocol(Side.RUNTIME), LinkProtocol(Side.WORKER)
    assert runtime.encode(InputReady()) == b"I"
    assert runtime.encode(Credit()) == b"C"
    assert runtime.encode(Stop()) == b"S"
    assert worker.encode(OutputReady()) == b"O"
    assert worker.encode(Ready()) == _message({"type": "ready"})
    assert worker.encode(Progress("50%")) == _message({"type": "progress", "message": "50%"})
    assert worker.encode(Fatal("boom")) == _message({"type": "fatal", "message": "boom"})
    config = json.loads(runtime.encode(CONFIG)[5:])
    assert config == {
        "type": "config",
        "node_class": CONFIG.node_class,
        "node_id": CONFIG.node_id,
        "params": CONFIG.params,
        "session_id": "s1",
        "prefix": "rm_",
        "root": "/tmp/rm",
        "iox_node": "rm-worker-s1_echo-1",
        "input": "s1_echo_input",
        "output": "s1_echo_output",
    }


def _stream(side: Side, events: list[LinkEvent]) -> bytes:
    link = LinkProtocol(side)
    return b"".join(link.encode(event) for event in events)


STREAMS = [
    (Side.WORKER, [CONFIG, Credit(), InputReady(), InputReady(), Credit(), CONFIG, InputReady()]),
    (
        Side.RUNTIME,
        [Progress("a"), Progress(""), Ready(), OutputReady(), OutputReady(), Fatal("x")],
    ),
]


@pytest.mark.parametrize(("receiver", "events"), STREAMS, ids=["to-worker", "to-runtime"])
def test_link_decodes_the_same_events_whatever_the_split(
    receiver: Side, events: list[LinkEvent]
) -> None:
    sender = Side.RUNTIME if receiver is Side.WORKER else Side.WORKER
    data = _stream(sender, events)
    for cut in range(len(data) + 1):
        link = LinkProtocol(receiver)
        link.receive_data(data[:cut])
        got = link.events()
        link.receive_data(data[cut:])
        got += link.events()
        assert got == events, f"split at byte {cut}"
        assert link.next_event() is None


@pytest.mark.parametrize(("receiver", "events"), STREAMS, ids=["to-worker", "to-runtime"])
def test_link_decodes_the_same_events_byte_by_byte(receiver: Side, events: list[LinkEvent]) -> None:
    sender = Side.RUNTIME if receiver is Side.WORKER else Side.WORKER
    data = _stream(sender, events)
    link = LinkProtocol(receiver)
    got: list[LinkEvent] = []
    for index in range(len(data)):
        link.receive_data(data[index : index + 1])
        got += link.events()
    assert got == events


def test_link_next_event_is_none_until_a_message_is_complete() -> None:
    data = LinkProtocol(Side.WORKER).encode(Progress("loading"))
    link = LinkProtocol(Side.RUNTIME)
    assert link.next_event() is None
    link.receive_data(data[:-1])
    assert link.next_event() is None
    link.receive_data(data[-1:])
    assert link.next_event() == Progress("loading")
    assert link.next_event() is None


MALFORMED = {
    "unknown opcode": (b"X", r"Unknown control opcode b'X'"),
    "oversized": (
        b"J" + struct.pack("<I", MAX_MESSAGE + 1),
        rf"control message of {MAX_MESSAGE + 1} bytes is over the link's limit",
    ),
    "bad json": (_frame(b"{not json"), r"not valid UTF-8 JSON"),
    "bad utf-8": (_frame(b'{"type": "\xff"}'), r"not valid UTF-8 JSON"),
    "not an object": (_message(["ready"]), r"is a JSON list, not an object"),
    "no type": (_message({"message": "x"}), r"has the type None; expected one of"),
    "unknown type": (_message({"type": "reboot"}), r"has the type 'reboot'; expected one of"),
    "type not text": (_message({"type": 3}), r"has the type 3"),
    "missing field": (
        _message({"type": "fatal"}),
        r"'fatal' control message lacks the fields \['message'\] and has the unexpected "
        r"fields \[\]",
    ),
    "unexpected field": (
        _message({"type": "ready", "pid": 4}),
        r"lacks the fields \[\] and has the unexpected fields \['pid'\]",
    ),
    "mistyped field": (
        _message({"type": "progress", "message": 50}),
        r"'progress' control message has a mistyped field: 'message' must be <class 'str'>",
    ),
    "wrong side": (b"C", r"runtime received Credit, which only the runtime sends"),
}


@pytest.mark.parametrize(("data", "match"), MALFORMED.values(), ids=MALFORMED.keys())
def test_link_malformed_input_is_a_link_protocol_error(data: bytes, match: str) -> None:
    link = LinkProtocol(Side.RUNTIME)
    link.receive_data(b"O" + data)
    assert link.next_event() == OutputReady()  # what came before the garbage still counts
    with pytest.raises(LinkProtocolError, match=match):
        link.next_event()


def test_link_mistyped_config_params_is_a_link_protocol_error() -> None:
    fields = json.loads(LinkProtocol(Side.RUNTIME).encode(CONFIG)[5:])
    link = LinkProtocol(Side.WORKER)
    link.receive_data(_message({**fields, "params": [1, 2]}))
    with pytest.raises(LinkProtocolError, match=r"'params' must be <class 'dict'>"):
        link.next_event()


def test_link_stays_broken_after_a_protocol_error() -> None:
    link = LinkProtocol(Side.RUNTIME)
    link.receive_data(b"Z")
    with pytest.raises(LinkProtocolError) as first:
        link.next_event()
    link.receive_data(b"O")
    with pytest.raises(LinkProtocolError) as second:
        link.next_event()
    assert second.value is first.value
    assert isinstance(first.value, RemoteMediaError)


def test_link_refuses_to_encode_the_other_sides_event() -> None:
    with pytest.raises(LinkProtocolError, match=r"The worker cannot send Config"):
        LinkProtocol(Side.WORKER).encode(CONFIG)
    with pytest.raises(LinkProtocolError, match=r"The runtime cannot send Ready"):
        LinkProtocol(Side.RUNTIME).encode(Ready())


def test_link_refuses_to_encode_an_oversized_message() -> None:
    huge = Fatal("x" * MAX_MESSAGE)
    with pytest.raises(LinkProtocolError, match=r"The Fatal message is \d+ bytes, over"):
        LinkProtocol(Side.WORKER).encode(huge)


def test_link_events_check_their_field_types() -> None:
    with pytest.raises(TypeError, match="'message' must be <class 'str'>"):
        Progress(3)  # type: ignore[arg-type]
