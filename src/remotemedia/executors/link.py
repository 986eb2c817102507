"""The runtime's end of one worker: its control socket and its shared-memory ports.

A :class:`~remotemedia.executors.process.ProcessNode` supervises a worker (starts,
restarts, stops it, decides what a failure costs); a :class:`WorkerLink` moves the
bytes between them, one link per worker started:

- the control socket carries :mod:`remotemedia.ipc.control` events both ways (the
  config, the doorbell that says a frame waits, credits, progress, stop);
- the input port carries the node's inputs to the worker, the output port its
  outputs back, each frame encoded by :mod:`remotemedia.ipc.codec`.

It is also a seam: a fault-injection kit wraps it (:data:`LinkSeam`) to drop,
corrupt, delay or kill at each of these steps, so the supervision code runs the
same with and without faults. What a wrapper may rely on is this class's public
methods; nothing else of it is read from outside.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import attrs
import trio

from remotemedia.ipc.codec import (
    FrameKind,
    decode_data,
    decode_error,
    decode_frame,
    end_count,
    end_work,
)
from remotemedia.ipc.control import (
    Config,
    Credit,
    InputReady,
    LinkEvent,
    LinkProtocol,
    Side,
    Stop,
)
from remotemedia.ipc.shm import ShmPort

__all__ = ["NOTHING", "End", "LinkSeam", "Output", "WorkerLink", "same_link"]


NOTHING: Any = object()
"""What :meth:`WorkerLink.receive_output` returns for a wake-up with no frame behind it."""


@attrs.frozen
class End:
    """A worker's EndOfInput frame.

    Attributes:
        outputs: How many outputs it sent (None: it did not say).
        worked_ns: When its node began and finished the input (``time.time_ns()``),
            if it said.
    """

    outputs: int | None
    worked_ns: tuple[int, int] | None = None


Output: TypeAlias = Any
"""A decoded output frame: RuntimeData, a ValueError (an Error frame), an :class:`End`
or :data:`NOTHING`."""


class WorkerLink:
    """The control socket and shared-memory ports of one running worker.

    Args:
        sock: The runtime's end of the control socket (non-blocking).
        inputs: The port the worker's inputs are published on.
        outputs: The port the worker's outputs arrive on.
    """

    def __init__(self, sock: socket.socket, inputs: ShmPort, outputs: ShmPort) -> None:
        self.sock = sock
        self.protocol = LinkProtocol(Side.RUNTIME)
        self.inputs = inputs
        self.outputs = outputs
        self.owed_credits = 0
        """Output frames consumed but not yet credited back (a new worker has all its own)."""
        self.buffered = 0
        """Events taken without waiting (they came in the same read as an earlier one):
        the fast path of a stream of outputs."""

    def encode(self, event: LinkEvent) -> bytes:
        """``event``'s bytes on this link."""
        return self.protocol.encode(event)

    async def send(self, data: bytes) -> None:
        """Send ``data`` on the control socket, waiting for room as the worker reads.

        Raises:
            OSError: The worker is gone.
        """
        # Non-blocking (Trio waits on it): a large config needs several sends.
        view = memoryview(data)
        while view:
            await trio.lowlevel.wait_writable(self.sock)
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                continue

    async def send_config(self, config: Config) -> None:
        """Tell a new worker what to load (the first message on a link).

        Raises:
            OSError: The worker is gone.
            LinkProtocolError: The config does not fit a link message.
        """
        await self.send(self.encode(config))

    async def send_input(self, parts: Sequence[bytes | memoryview], *, flush: bool) -> None:
        """Publish one input frame and ring the worker's doorbell.

        ``flush`` says the frame is an EndOfInput (the node flushes): nothing here
        needs to know, but a fault seam counts inputs and flushes apart.

        Credits for output frames already consumed ride along with the doorbell: one
        send, and one wake-up of the worker, per input. Nothing here waits: an input
        goes out whole or not at all.

        Raises:
            OSError: The worker is gone.
            ShmError: The worker's input buffer is gone or full.
        """
        self.inputs.publish(parts)
        self.send_now(self.encode(Credit()) * self.owed_credits + self.encode(InputReady()))
        self.owed_credits = 0

    def send_now(self, data: bytes) -> None:
        """Send a few bytes that fit the socket's buffer, without waiting.

        Raises:
            OSError: The worker is gone.
        """
        self.sock.sendall(data)

    def credit(self, batch: int) -> None:
        """Count one output frame consumed; credit them back once ``batch`` are owed."""
        self.owed_credits += 1
        if self.owed_credits >= batch:  # a long stream of outputs: pay now
            with contextlib.suppress(OSError):  # a dead worker shows as EOF next time
                self.send_now(self.encode(Credit()) * self.owed_credits)
            self.owed_credits = 0

    def ask_stop(self) -> None:
        """Ask the worker to stop its node's work on the input in flight (a Stop).

        One byte on a socket that has room for it, sent without waiting (the caller
        is being cancelled); should it not fit, the worker finishes the input.
        """
        with contextlib.suppress(OSError):
            self.sock.send(self.encode(Stop()))

    def buffered_event(self) -> LinkEvent | None:
        """The next event if it has arrived already (no wait), else None.

        Raises:
            LinkProtocolError: The worker sent garbage.
        """
        event = self.protocol.next_event()
        if event is not None:
            self.buffered += 1
        return event

    async def next_event(self) -> LinkEvent | None:
        """The worker's next event, waiting for it; None once it closed its socket.

        Raises:
            LinkProtocolError: The worker sent garbage.
        """
        protocol = self.protocol
        while (event := protocol.next_event()) is None:
            await trio.lowlevel.wait_readable(self.sock)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                return None
            protocol.receive_data(data)
        return event

    async def receive_output(self) -> Output:
        """Decode the next output frame (see :data:`Output`).

        Async for the seam's sake (a wrapper may wait); this one never does.

        Raises:
            CorruptFrameError: The frame does not decode.
        """
        return self.decode_output(lambda raw: raw)

    def decode_output(self, transform: Callable[[memoryview], bytes | memoryview]) -> Output:
        """Decode the next output frame after ``transform`` (the identity but for faults).

        No view into the shared-memory sample outlives the lease: the sample goes back
        when the ``with`` ends.
        """
        with self.outputs.receive() as raw:
            if raw is None:
                return NOTHING
            frame = decode_frame(transform(raw))
            if frame.kind is FrameKind.ERROR:
                message, _ = decode_error(frame)
                return ValueError(message)
            if frame.kind is FrameKind.END_OF_INPUT:
                return End(end_count(frame), end_work(frame))
            return decode_data(frame)

    def drain_outputs(self) -> None:
        """Drop every output frame waiting (a dead worker's, or an abandoned input's)."""
        while True:
            with self.outputs.receive() as raw:
                if raw is None:
                    return

    async def before_cleanup(self) -> None:
        """The node's cleanup is about to stop the worker (a seam for faults; nothing here)."""

    def shutdown_write(self) -> None:
        """Half-close the control socket: the worker reads EOF (and exits)."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Close the control socket (a healthy worker exits at once on EOF)."""
        self.sock.close()


LinkSeam: TypeAlias = Callable[[WorkerLink, str, Callable[[], Awaitable[None]]], WorkerLink]
"""Wraps each new worker's link: ``(link, node_id, kill)`` to the link the node uses.

``kill`` SIGKILLs that worker and waits until it is gone. The default seam returns
the link itself; a fault kit returns a wrapper with the same methods.
"""


def same_link(link: WorkerLink, node_id: str, kill: Callable[[], Awaitable[None]]) -> WorkerLink:
    """The default :data:`LinkSeam`: the link itself."""
    return link
