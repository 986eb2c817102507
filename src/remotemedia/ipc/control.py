"""The control link between the runtime and a worker: typed events, one codec (sans-IO).

One socketpair per worker carries wake-ups, flow control, liveness and small
control messages; the frames themselves travel through shared memory. Both ends
speak through a :class:`LinkProtocol`: ``encode(event) -> bytes`` for what they
send, ``receive_data(bytes)`` then ``next_event()`` for what they receive, like
h11. It does no I/O; the socket code around it lives in
:mod:`remotemedia.executors.process` (runtime) and
:mod:`remotemedia.executors.worker` (worker).

On the wire (unchanged from the dict-based link):

- ``I`` (:class:`InputReady`): an input frame waits in shared memory, runtime -> worker;
- ``O`` (:class:`OutputReady`): an output frame waits in shared memory, worker -> runtime;
- ``C`` (:class:`Credit`): the runtime consumed one output, the worker may publish one more;
- ``S`` (:class:`Stop`): nobody wants the rest of the input in flight, runtime -> worker:
  the worker stops its node's work on it (a barge-in stops a model mid-generation)
  and ends the input with the outputs it sent so far;
- ``J`` + u32 little-endian length + UTF-8 JSON object with a ``"type"`` key: a control
  message, :class:`Config` (runtime -> worker), :class:`Ready`, :class:`Progress`,
  :class:`Count` and :class:`Fatal` (worker -> runtime), :class:`Inject` (runtime ->
  worker, only under a fault plan); the other keys are the event's fields.

Rules:

1. Every event has one sender: an end only encodes the events its side sends and
   only decodes the events the other side sends.
2. Bytes may arrive split anywhere: ``receive_data`` buffers, ``next_event`` returns
   an event once all its bytes are in, and None until then. The split never changes
   the events.
3. Anything malformed (an unknown opcode, an oversized message, bad JSON, an unknown
   ``"type"``, a missing, unexpected or mistyped field, an event from the wrong side)
   is a :class:`~remotemedia.errors.LinkProtocolError`, never another exception. The
   link is then broken for good: every later ``next_event`` raises the same error.
4. End of file is not an event: the socket code sees it. A worker exits when the
   runtime closes its end, and the runtime treats EOF as a worker crash.
"""

from __future__ import annotations

import enum
import json
import struct
from typing import Any, ClassVar

import attrs

from remotemedia.errors import LinkProtocolError

__all__ = [
    "MAX_MESSAGE",
    "Config",
    "Count",
    "Credit",
    "Fatal",
    "Inject",
    "InputReady",
    "LinkEvent",
    "LinkProtocol",
    "OutputReady",
    "Progress",
    "Ready",
    "Side",
    "Stop",
]

_MESSAGE = b"J"
_LENGTH = struct.Struct("<I")
MAX_MESSAGE = 16 * 1024 * 1024
"""The largest JSON body of a control message, in bytes."""


class Side(enum.Enum):
    """Which end of the link a :class:`LinkProtocol` speaks for."""

    RUNTIME = "runtime"
    WORKER = "worker"


_TEXT = attrs.validators.instance_of(str)


@attrs.frozen
class InputReady:
    """An input frame waits in shared memory (``I``, runtime -> worker)."""

    sender: ClassVar[Side] = Side.RUNTIME


@attrs.frozen
class OutputReady:
    """An output frame waits in shared memory (``O``, worker -> runtime)."""

    sender: ClassVar[Side] = Side.WORKER


@attrs.frozen
class Credit:
    """The runtime consumed one output frame; the worker may publish one more (``C``)."""

    sender: ClassVar[Side] = Side.RUNTIME


@attrs.frozen
class Stop:
    """Stop the input in flight: its caller stopped reading (runtime -> worker).

    The worker cancels its node's work on that input and ends it as usual (an
    EndOfInput frame counting the outputs sent so far). Sent at most once per input,
    and only before the input's end has been read; one that arrives after the node
    finished is ignored.
    """

    sender: ClassVar[Side] = Side.RUNTIME


@attrs.frozen
class Config:
    """What a new worker runs and where its shared memory is (the first message it gets).

    Attributes:
        node_class: The node class to build, as ``module:QualName``.
        node_id: The node's id in the manifest.
        params: The node's params as written in the manifest (a JSON object).
        session_id: The session the worker serves; stamped on its output frames.
        prefix: The iceoryx2 namespace prefix.
        root: The iceoryx2 namespace root directory.
        iox_node: The name of the worker's iceoryx2 node.
        input: The shared-memory service the worker takes inputs from.
        output: The shared-memory service the worker publishes outputs to.
    """

    sender: ClassVar[Side] = Side.RUNTIME
    node_class: str = attrs.field(validator=_TEXT)
    node_id: str = attrs.field(validator=_TEXT)
    params: dict[str, Any] = attrs.field(validator=attrs.validators.instance_of(dict))
    session_id: str = attrs.field(validator=_TEXT)
    prefix: str = attrs.field(validator=_TEXT)
    root: str = attrs.field(validator=_TEXT)
    iox_node: str = attrs.field(validator=_TEXT)
    input: str = attrs.field(validator=_TEXT)
    output: str = attrs.field(validator=_TEXT)


@attrs.frozen
class Ready:
    """The worker built its node and loaded its model; it takes inputs now."""

    sender: ClassVar[Side] = Side.WORKER


@attrs.frozen
class Progress:
    """The worker's node reports progress while it initialises (a model download, say).

    Attributes:
        message: The node's progress message, passed on to the client.
    """

    sender: ClassVar[Side] = Side.WORKER
    message: str = attrs.field(validator=_TEXT)


@attrs.frozen
class Count:
    """The worker's node counted something (:meth:`~remotemedia.nodes.Node.count`).

    Attributes:
        event: What it counted (``full_window_fallback``, ...).
        amount: How many more since the last report.
    """

    sender: ClassVar[Side] = Side.WORKER
    event: str = attrs.field(validator=_TEXT)
    amount: int = attrs.field(validator=attrs.validators.instance_of(int))


@attrs.frozen
class Fatal:
    """The worker could not build or initialise its node, and exits.

    Attributes:
        message: Why, as the node's error described it.
    """

    sender: ClassVar[Side] = Side.WORKER
    message: str = attrs.field(validator=_TEXT)


@attrs.frozen
class Inject:
    """A fault for the worker's node to suffer the next time it reaches ``site``.

    Only sent while a fault plan is installed: the runtime counts the occurrences
    (so they count across worker restarts) and the worker carries out the action
    (see :mod:`remotemedia.faults`).

    Attributes:
        site: The node site (``node.process``, ...).
        action: The action, as :meth:`remotemedia.faults.Action.to_json` wrote it.
    """

    sender: ClassVar[Side] = Side.RUNTIME
    site: str = attrs.field(validator=_TEXT)
    action: str = attrs.field(validator=_TEXT)


LinkEvent = (
    InputReady | OutputReady | Credit | Stop | Config | Ready | Progress | Count | Fatal | Inject
)
"""Every event of the link."""

_OPCODES: dict[type[LinkEvent], bytes] = {
    InputReady: b"I",
    OutputReady: b"O",
    Credit: b"C",
    Stop: b"S",
}
_BY_OPCODE: dict[bytes, LinkEvent] = {
    b"I": InputReady(),
    b"O": OutputReady(),
    b"C": Credit(),
    b"S": Stop(),
}
_TYPES: dict[type[LinkEvent], str] = {
    Config: "config",
    Ready: "ready",
    Progress: "progress",
    Count: "count",
    Fatal: "fatal",
    Inject: "inject",
}
_BY_TYPE = {name: cls for cls, name in _TYPES.items()}


class LinkProtocol:
    """One end of the control link: encodes what it sends, decodes what it receives.

    Args:
        side: The end this object speaks for; it receives the other side's events.
    """

    def __init__(self, side: Side) -> None:
        self.side = side
        self._buffer = bytearray()
        self._error: LinkProtocolError | None = None

    def encode(self, event: LinkEvent) -> bytes:
        """The bytes that carry ``event`` to the other end.

        Raises:
            LinkProtocolError: This side never sends ``event`` (rule 1), or its JSON
                body is over :data:`MAX_MESSAGE` bytes.
        """
        if event.sender is not self.side:
            raise LinkProtocolError(
                f"The {self.side.value} cannot send {type(event).__name__}: "
                f"only the {event.sender.value} sends it."
            )
        opcode = _OPCODES.get(type(event))
        if opcode is not None:
            return opcode
        body = json.dumps({"type": _TYPES[type(event)], **attrs.asdict(event)}).encode()
        if len(body) > MAX_MESSAGE:
            raise LinkProtocolError(
                f"The {type(event).__name__} message is {len(body)} bytes, over the "
                f"link's limit of {MAX_MESSAGE}; send less through the control socket."
            )
        return _MESSAGE + _LENGTH.pack(len(body)) + body

    def receive_data(self, data: bytes) -> None:
        """Add bytes received from the other end (any split, rule 2)."""
        self._buffer += data

    def next_event(self) -> LinkEvent | None:
        """The next complete event, or None until more bytes are received.

        Raises:
            LinkProtocolError: The bytes break the protocol (rule 3).
        """
        if self._error is not None:
            raise self._error
        try:
            event = self._parse()
        except LinkProtocolError as error:
            self._error = error  # rule 3: broken for good
            raise
        return event

    def events(self) -> list[LinkEvent]:
        """Every complete event received so far, in order (see :meth:`next_event`)."""
        found = []
        while (event := self.next_event()) is not None:
            found.append(event)
        return found

    def _parse(self) -> LinkEvent | None:
        event = self._take()
        if event is not None and event.sender is self.side:  # rule 1
            raise LinkProtocolError(
                f"The {self.side.value} received {type(event).__name__}, which only "
                f"the {self.side.value} sends; the other end is broken."
            )
        return event

    def _take(self) -> LinkEvent | None:
        buffer = self._buffer
        if not buffer:
            return None
        opcode = bytes(buffer[:1])
        if opcode in _BY_OPCODE:
            del buffer[:1]
            return _BY_OPCODE[opcode]
        if opcode != _MESSAGE:
            raise LinkProtocolError(
                f"Unknown control opcode {opcode!r} on the worker link; expected "
                "b'I', b'O', b'C', b'S' or b'J'."
            )
        if len(buffer) < 1 + _LENGTH.size:
            return None
        (length,) = _LENGTH.unpack_from(buffer, 1)
        if length > MAX_MESSAGE:
            raise LinkProtocolError(
                f"A control message of {length} bytes is over the link's limit of {MAX_MESSAGE}."
            )
        end = 1 + _LENGTH.size + length
        if len(buffer) < end:
            return None
        body = bytes(buffer[1 + _LENGTH.size : end])
        del buffer[:end]
        return _message(body)


def _message(body: bytes) -> LinkEvent:
    """Decode the JSON body of a control message into its event (rule 3)."""
    try:
        fields = json.loads(body)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, or nested too deep
        raise LinkProtocolError(f"A control message is not valid UTF-8 JSON: {exc}.") from None
    if not isinstance(fields, dict):
        raise LinkProtocolError(
            f"A control message is a JSON {type(fields).__name__}, not an object."
        )
    name = fields.pop("type", None)
    cls = _BY_TYPE.get(name) if isinstance(name, str) else None
    if cls is None:
        raise LinkProtocolError(
            f"A control message has the type {name!r}; expected one of {sorted(_BY_TYPE)}."
        )
    expected = {field.name for field in attrs.fields(cls)}
    missing, unexpected = sorted(expected - fields.keys()), sorted(fields.keys() - expected)
    if missing or unexpected:
        raise LinkProtocolError(
            f"The {name!r} control message lacks the fields {missing} and has the "
            f"unexpected fields {unexpected}."
        )
    try:
        return cls(**fields)
    except TypeError as exc:  # a validator rejected a field's type
        # attrs' validators put the sentence first, then the attribute and the value.
        why = exc.args[0] if exc.args else exc
        raise LinkProtocolError(
            f"The {name!r} control message has a mistyped field: {why}"
        ) from None
