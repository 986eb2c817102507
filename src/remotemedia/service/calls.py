"""One call, whatever the edge: the per-call lifecycle, written once.

Each edge (the native gRPC transport, grpclib's, the WebSocket) reads and writes
bytes its own way; what a call does with them is the same everywhere and lives here:

- :class:`~remotemedia.service.wire.Wire` is what an edge implements for one call:
  receive a request's bytes, send a response's bytes (at once if it can, else
  waiting), abort.
- :func:`run_stream_call` runs the call over it: the call's byte budget, its request
  channel, the session (:func:`~remotemedia.service.streaming.serve_stream`), its
  responses, and the finish within the idle timeout once the session has ended.
- :func:`run_unary_call` does the same for a one-request, one-response call.
- :class:`LiveCalls` counts calls not finished (a drain waits for them);
  :func:`observed` records each call's outcome and duration in the metrics.
- :func:`call_failure` picks the error that ends a failed call, for the edge to
  turn into a gRPC status or a WebSocket close.

Rules:

1. Requests are taken in order: an edge's fast path (``Wire.deliver``) is used
   only while nothing waits before it, in the edge or here.
2. Every byte queued for a call counts in its budget until the wire has it, so a
   session's queues and its call's together stay under ``max_session_buffer_bytes``.
3. A response goes to the wire at once when none waits before it and the wire can
   take it; otherwise it joins a backlog of at most :data:`RESPONSE_BUFFER`, which a
   writer task (started when first needed) writes, waiting while the client does
   not read.
4. Once the session has ended, its responses get the idle timeout to be written,
   counted from the end or from when the one being written began to wait, whichever
   is earlier: a client that stopped reading is cut off at once.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import attrs
import trio
from google.protobuf.message import DecodeError, Message

from remotemedia.errors import (
    InvalidRequestError,
    RemoteMediaError,
    ResourceLimitError,
    leaf_errors,
)
from remotemedia.service.context import ServiceContext
from remotemedia.service.metrics import ServerMetrics
from remotemedia.service.streaming import serve_stream
from remotemedia.service.wire import CallOrigin, ClientGone, Wire
from remotemedia.session.budget import ByteBudget
from remotemedia.v1 import execution_pb2 as epb
from remotemedia.v1 import streaming_pb2 as spb

__all__ = [
    "REQUEST_BUFFER",
    "RESPONSE_BUFFER",
    "CallEnd",
    "LiveCalls",
    "call_failure",
    "observed",
    "oversized_response",
    "run_stream_call",
    "run_unary_call",
]

REQUEST_BUFFER = 8
"""Requests waiting for a session at most (its byte budget bounds their bytes too)."""
RESPONSE_BUFFER = 32
"""Responses a call may hold back while its client's window or socket is full."""

M = TypeVar("M", bound=Message)


class CallEnd(enum.Enum):
    """How a StreamPipeline call ended, for the edge to close it accordingly."""

    CLEAN = "clean"
    """Every response written, and none was an error."""
    ERROR = "error"
    """Every response written; the session ended with an error response."""
    STALLED = "stalled"
    """The client took no response for the idle timeout after its session ended:
    nothing can follow a half-written response (reset the stream, close the socket)."""
    GONE = "gone"
    """The client went away; nothing more can reach it."""


def oversized_response(size: int, max_bytes: int) -> ResourceLimitError:
    """The error that ends a call whose response would exceed the message limit."""
    return ResourceLimitError(
        f"A response of {size} bytes exceeds the {max_bytes}-byte message limit; "
        "send smaller inputs or raise --max-message-mb."
    )


async def run_stream_call(
    wire: Wire, context: ServiceContext, origin: CallOrigin | None = None
) -> CallEnd:
    """Run one StreamPipeline call over ``wire`` until its session ends and is written.

    Args:
        wire: The call's connection (wrapped by the context's fault seam first).
        context: What every call shares.
        origin: Where the call comes from (its edge, a client's traceparent).

    Returns:
        How it ended.

    Raises:
        SessionRejected: The server is full or draining.
        ResourceLimitError: A response exceeded the message limit.
        Exception: What :meth:`Wire.receive` raised for a malformed request stream.
    """
    wire = context.seams.wire(wire)
    limits = context.limits
    budget = ByteBudget(limits.max_session_buffer_bytes)
    reader = _Reader(wire, budget)
    wire.deliver = reader.deliver
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader.run, nursery.cancel_scope)
            responses = _Responses(wire, budget, limits.max_message_bytes, nursery)
            clean = await serve_stream(
                reader.requests, responses, context, budget, origin or CallOrigin()
            )
            reader.stop()  # the session is over: read the client no more
            if not await responses.finish(limits.idle_timeout):
                context.log.info(
                    "A StreamPipeline client took no response for %g s after its session "
                    "ended; ending its call.",
                    limits.idle_timeout,
                )
                nursery.cancel_scope.cancel()
                return CallEnd.STALLED
    except BaseExceptionGroup as group:
        raise call_failure(group) from None
    finally:
        wire.deliver = None
    if reader.gone:
        return CallEnd.GONE
    if responses.failure is not None:
        raise responses.failure
    return CallEnd.CLEAN if clean else CallEnd.ERROR


class _Reader:
    """Takes the client's requests to the session: decoded, counted, in order."""

    def __init__(self, wire: Wire, budget: ByteBudget) -> None:
        self.wire = wire
        self.budget = budget
        self.inbox, self.requests = trio.open_memory_channel[tuple[spb.StreamRequest, int]](
            REQUEST_BUFFER
        )
        self.holding = False  # run() has taken a request it has not passed on yet
        self.gone = False
        self.scope = trio.CancelScope()

    def deliver(self, data: bytes) -> bool:
        """The edge's fast path: straight into the session's channel if it has room."""
        if self.holding:
            return False
        room = self.inbox.statistics()
        if room.current_buffer_used >= room.max_buffer_size and not room.tasks_waiting_receive:
            return False  # full: no decoding a request it cannot take
        size = len(data)
        if not self.budget.try_take(size, self.inbox):
            return False
        try:
            self.inbox.send_nowait((spb.StreamRequest.FromString(data), size))
        except Exception:  # full, closed or undecodable: run() decides
            self.budget.give_back(size)
            return False
        return True

    async def run(self, call: trio.CancelScope) -> None:
        """Read until the client half-closes, goes, or the session stops taking requests."""
        inbox, budget = self.inbox, self.budget
        with self.scope, inbox:
            try:
                while (data := await self.wire.receive()) is not None:
                    self.holding = True
                    request = _decode(spb.StreamRequest, data)
                    size = len(data)
                    del data  # decoded: one copy in hand while it waits, not two
                    await budget.take(size, inbox)
                    try:
                        # Without a checkpoint when there is room: ``send`` would yield
                        # after handing it over, still holding, and every request the
                        # edge read meanwhile would miss the fast path too, for good.
                        inbox.send_nowait((request, size))
                    except trio.WouldBlock:
                        try:
                            await inbox.send((request, size))
                        except BaseException:
                            budget.give_back(size)
                            raise
                    except BaseException:
                        budget.give_back(size)
                        raise
                    self.holding = False
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the session has ended and reads no more
            except ClientGone:
                self.gone = True
                call.cancel()  # nobody is left to take its results

    def stop(self) -> None:
        """Stop reading; what the session left unread goes now."""
        self.requests.close()
        self.scope.cancel()


class _Responses:
    """A session's responses, written straight to the wire when they can be (rule 3).

    :func:`serve_stream` sends to it as to a channel: a full backlog makes
    ``send_nowait`` raise ``trio.WouldBlock`` and ``send`` wait.
    """

    def __init__(
        self, wire: Wire, budget: ByteBudget, max_bytes: int, nursery: trio.Nursery
    ) -> None:
        self.wire = wire
        self.budget = budget
        self.max_bytes = max_bytes
        self.nursery = nursery
        self.failure: ResourceLimitError | None = None
        self.waiting_since = math.inf  # when the response being written began to wait
        self._backlog: collections.deque[bytes] = collections.deque()
        self._closed = False
        self._writing = False
        self._written = trio.Event()
        self._written.set()
        self._room = trio.lowlevel.ParkingLot()
        self._arrived = trio.lowlevel.ParkingLot()
        self._scope = trio.CancelScope()

    @property
    def tasks_waiting_receive(self) -> int:
        """1 when a response would be written at once (the budget's "receiver waits")."""
        return 0 if self._backlog else 1

    def statistics(self) -> _Responses:
        """Itself: it answers ``tasks_waiting_receive``."""
        return self

    def send_nowait(self, value: bytes) -> None:
        """Write ``value`` now, or queue it; ``trio.WouldBlock`` if the backlog is full."""
        if self._closed:
            raise trio.ClosedResourceError("the session's responses are closed")
        if len(value) > self.max_bytes:
            # An error of the call (RESOURCE_EXHAUSTED), not of the session.
            self.failure = oversized_response(len(value), self.max_bytes)
            self.nursery.cancel_scope.cancel()
            return
        if not self._backlog and self.wire.send_now(value):
            self.budget.give_back(len(value))
            return
        if len(self._backlog) >= RESPONSE_BUFFER:
            raise trio.WouldBlock
        self._backlog.append(value)
        if not self._writing:
            self._writing = True
            self._written = trio.Event()
            self._scope = trio.CancelScope()  # (each writer its own: it may start again)
            self.nursery.start_soon(self._write)
        self._arrived.unpark_all()

    async def send(self, value: bytes) -> None:
        """Write or queue ``value``, waiting while the backlog is full."""
        while True:
            try:
                self.send_nowait(value)
                return
            except trio.WouldBlock:
                await self._room.park()

    def close(self) -> None:
        """No more responses: the writer ends once the backlog is written."""
        self._closed = True
        self._arrived.unpark_all()

    async def _write(self) -> None:
        try:
            with self._scope:
                while self._backlog or not self._closed:
                    if not self._backlog:
                        self.budget.receiver_waiting()
                        await self._arrived.park()
                        continue
                    value = self._backlog[0]
                    self.waiting_since = trio.current_time()
                    try:
                        await self.wire.send(value)
                    except trio.BrokenResourceError:
                        return  # the client is gone; its call is cancelled next
                    self._backlog.popleft()
                    self.budget.give_back(len(value))
                    self.waiting_since = math.inf
                    self._room.unpark_all()
                    if not self._backlog:
                        break  # caught up: responses go straight to the wire again
        finally:
            if self._backlog:
                # Only a writer that cannot go on (cancelled, or the client is gone)
                # leaves a backlog: what it could not write goes now, not whenever the
                # call object is collected.
                for value in self._backlog:
                    self.budget.give_back(len(value))
                self._backlog.clear()
            self._writing = False
            self._written.set()

    async def finish(self, idle_timeout: float) -> bool:
        """Let the writer deliver what a finished session left, within a deadline (rule 4).

        Returns:
            False if the deadline passed (the writer is then cancelled).
        """
        ended = trio.current_time()
        while self._writing:
            deadline = min(ended, self.waiting_since) + idle_timeout
            if trio.current_time() >= deadline:
                self._scope.cancel()
                return False
            with trio.move_on_at(deadline):
                await self._written.wait()
        return True


async def run_unary_call(
    wire: Wire,
    context: ServiceContext,
    method: str,
    request_type: type[M],
    handler: Callable[[M, ServiceContext], Awaitable[Message]],
) -> None:
    """Run a one-request, one-response call (ExecutePipeline, GetVersion) over ``wire``.

    Raises:
        InvalidRequestError: No request message, or not a valid one.
        ResourceLimitError: The response exceeds the message limit.
        RemoteMediaError: What the handler raised.
    """
    with observed(context.metrics, method) as outcome:
        data = await wire.receive()
        if data is None:
            raise InvalidRequestError(f"{method} needs a request message.")
        response = await handler(_decode(request_type, data), context)
        encoded = response.SerializeToString()
        max_bytes = context.limits.max_message_bytes
        if len(encoded) > max_bytes:
            raise oversized_response(len(encoded), max_bytes)
        await wire.send(encoded)
        if not (isinstance(response, epb.ExecuteResponse) and response.HasField("error")):
            outcome.success = True


def _decode(message_type: type[M], data: bytes) -> M:
    try:
        return message_type.FromString(data)
    except DecodeError as error:
        raise InvalidRequestError(
            f"A message is not a valid {message_type.__name__}: {error}"
        ) from None


@attrs.define
class Outcome:
    """Whether a call succeeded, as :func:`observed` records it."""

    success: bool = False


@contextlib.contextmanager
def observed(metrics: ServerMetrics, method: str) -> Iterator[Outcome]:
    """Record the call's outcome (set ``success`` on what this yields) and its duration."""
    started = time.perf_counter()
    outcome = Outcome()
    try:
        yield outcome
    finally:
        status = "success" if outcome.success else "error"
        metrics.requests.inc(method=method, status=status)
        metrics.request_duration.observe(time.perf_counter() - started, method=method)


class LiveCalls:
    """Counts the calls of an edge not finished yet: a drain waits until none is."""

    def __init__(self) -> None:
        self.live = 0
        self._idle = trio.Event()
        self._idle.set()

    def begin(self) -> None:
        """A call started."""
        self.live += 1
        if self._idle.is_set():
            self._idle = trio.Event()

    def end(self) -> None:
        """A call finished (its last byte written)."""
        self.live -= 1
        if not self.live:
            self._idle.set()

    @contextlib.asynccontextmanager
    async def counting(self) -> AsyncIterator[None]:
        """Count the block as one live call."""
        self.begin()
        try:
            yield
        finally:
            self.end()

    async def wait_idle(self) -> None:
        """Wait until no call is live."""
        await self._idle.wait()


def call_failure(error: BaseException) -> BaseException:
    """The one error that ends a failed call, from what its tasks raised.

    A typed error (a :class:`~remotemedia.errors.RemoteMediaError`, or an edge's own
    status error) wins over the cancellations and secondary failures around it; an
    exception group of nothing else is returned whole, for the edge to log.
    """
    leaves = list(leaf_errors(error))
    real = [leaf for leaf in leaves if not isinstance(leaf, trio.Cancelled)]
    for leaf in real:
        if isinstance(leaf, RemoteMediaError):
            return leaf
    if len(real) == 1:
        return real[0]
    if not real and leaves:
        return leaves[0]
    return error
