"""The native transport's RPCs: each call's headers checked, routed, run, and ended with a status.

Every call goes through :meth:`Calls.run`: the request must be a gRPC POST, its
``authorization`` is checked (health exempt if configured), ``grpc-timeout`` becomes
a deadline, and whatever the handler raises becomes the call's status — a typed
error its status (:func:`~remotemedia.service.status.grpc_status`), anything else
INTERNAL, logged. The handlers are the same service functions the grpclib transport
calls, without a second event loop between them. A StreamPipeline call costs no task
of its own per message in the common case: the connection's reader hands each request
straight to the session's channel when it has room, and the session's responses go
straight into h2 when nothing waits before them; a pump task runs only for a backlog.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
from google.protobuf.message import DecodeError, Message
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from remotemedia import faults
from remotemedia.config import AuthConfig
from remotemedia.errors import AuthenticationError, RemoteMediaError, leaf_errors
from remotemedia.service.auth import check_authorization
from remotemedia.service.context import ServiceContext
from remotemedia.service.execution import execute_pipeline, get_version
from remotemedia.service.status import grpc_status
from remotemedia.service.streaming import serve_stream
from remotemedia.session.budget import ByteBudget
from remotemedia.transport import fault_sites
from remotemedia.transport.h2_connection import ServerStream
from remotemedia.transport.health import HealthState
from remotemedia.transport.messages import (
    CallError,
    GrpcStatus,
    oversized_response,
    parse_timeout,
)
from remotemedia.v1 import execution_pb2 as epb
from remotemedia.v1 import streaming_pb2 as spb

__all__ = ["Calls"]

logger = logging.getLogger(__name__)

REQUEST_BUFFER = 8
"""Requests waiting for a session at most (its byte budget bounds their bytes too)."""
RESPONSE_BUFFER = 32
"""Responses a call may hold back while its client's window or socket is full."""
_HEALTH = "/grpc.health.v1.Health/"
_STREAMING = "/remotemedia.v1.StreamingPipelineService/"
_EXECUTION = "/remotemedia.v1.PipelineExecutionService/"

M = TypeVar("M", bound=Message)


def _decode(message_type: type[M], data: bytes) -> M:
    try:
        return message_type.FromString(data)
    except DecodeError as error:
        raise CallError(
            GrpcStatus.INVALID_ARGUMENT,
            f"A message is not a valid {message_type.__name__}: {error}",
        ) from None


def _check_size(data: bytes, max_bytes: int) -> int:
    """Refuse to send a message larger than the limit (clients set the same one)."""
    if len(data) > max_bytes:
        raise oversized_response(len(data), max_bytes)
    return len(data)


def _status_of(error: BaseException) -> CallError | None:
    """The status a failed call ends with, or None if the error is not ours to type."""
    for leaf in leaf_errors(error):
        if isinstance(leaf, CallError):
            return leaf
        if isinstance(leaf, RemoteMediaError):
            return CallError(GrpcStatus[grpc_status(leaf)], str(leaf))
    return None


class Calls:
    """Runs every call of a server; counts live ones for the drain.

    Args:
        context: What every call shares.
        auth: Who may call.
        health: The health service's state.
    """

    def __init__(self, context: ServiceContext, auth: AuthConfig, health: HealthState) -> None:
        self.context = context
        self.auth = auth
        self.health = health
        self.max_bytes = context.limits.max_message_bytes
        self.live = 0
        self._idle = trio.Event()
        self._idle.set()
        self._routes: dict[str, Callable[[ServerStream], Awaitable[bool]]] = {
            _STREAMING + "StreamPipeline": self.stream_pipeline,
            _EXECUTION + "ExecutePipeline": self.execute_pipeline,
            _EXECUTION + "GetVersion": self.get_version,
            _HEALTH + "Check": self.health_check,
            _HEALTH + "Watch": self.health_watch,
        }

    async def wait_idle(self) -> None:
        """Wait until no call is live (each has written its trailers)."""
        await self._idle.wait()

    async def run(self, stream: ServerStream) -> None:
        """Run one call to its end, its trailers written (unless the client reset it)."""
        self.live += 1
        if self._idle.is_set():
            self._idle = trio.Event()
        try:
            await self._run(stream)
        finally:
            self.live -= 1
            if not self.live:
                self._idle.set()

    async def _run(self, stream: ServerStream) -> None:
        try:
            handler = self._admit(stream)
            timeout = stream.header(b"grpc-timeout")
            with trio.move_on_after(
                parse_timeout(timeout.encode()) if timeout else math.inf
            ) as deadline:
                clean = await handler(stream)
            if deadline.cancelled_caught:
                stream.end(GrpcStatus.DEADLINE_EXCEEDED, "Deadline exceeded")
            elif clean:
                stream.end(GrpcStatus.OK)
            else:
                stream.reset()
        except Exception as error:
            status = _status_of(error)
            if status is None:
                logger.exception("A %s call failed unexpectedly.", stream.path)
                status = CallError(GrpcStatus.INTERNAL, "Internal server error")
            stream.end(status.status, status.message)

    def _admit(self, stream: ServerStream) -> Callable[[ServerStream], Awaitable[bool]]:
        """The call's handler, once its headers pass; else the error that ends it."""
        if stream.header(b":method") != "POST":
            raise CallError(GrpcStatus.UNIMPLEMENTED, "gRPC calls are HTTP/2 POST requests.")
        content_type = stream.header(b"content-type") or ""
        if not content_type.startswith("application/grpc"):
            raise CallError(
                GrpcStatus.UNKNOWN, f"Content type {content_type!r} is not application/grpc."
            )
        encoding = stream.header(b"grpc-encoding")
        if encoding not in (None, "identity"):
            raise CallError(
                GrpcStatus.UNIMPLEMENTED, f"Compressed messages ({encoding}) are not supported."
            )
        if not (self.auth.exempt_health and stream.path.startswith(_HEALTH)):
            try:
                check_authorization(stream.header(b"authorization"), self.auth)
            except AuthenticationError as error:
                raise CallError(GrpcStatus.UNAUTHENTICATED, str(error)) from None
        handler = self._routes.get(stream.path)
        if handler is None:
            raise CallError(GrpcStatus.UNIMPLEMENTED, f"Method not found: {stream.path}")
        return handler

    # ------------------------------------------------------------------ StreamPipeline

    async def stream_pipeline(self, stream: ServerStream) -> bool:
        """Serve one bidirectional stream: the wire to :func:`serve_stream` and back.

        Returns:
            False if the client took no response for the idle timeout after its
            session ended (its stream is then reset, as no trailers can follow a
            half-written response).
        """
        context = self.context
        limits = context.limits
        metrics = context.metrics
        started = time.perf_counter()
        status = "error"
        budget = ByteBudget(limits.max_session_buffer_bytes)
        requests_send, requests_receive = trio.open_memory_channel[tuple[spb.StreamRequest, int]](
            REQUEST_BUFFER
        )
        edge = _fault_edge(stream) if faults.installed() is not None else None

        holding = False  # pump_in has taken a message it has not passed on yet

        def deliver(data: bytes) -> bool:
            """The reader's fast path: straight into the session's channel if it has room."""
            if holding:
                return False
            size = len(data)
            if not budget.try_take(size, requests_send):
                return False
            try:
                requests_send.send_nowait((spb.StreamRequest.FromString(data), size))
            except Exception:  # full, closed or undecodable: pump_in decides
                budget.give_back(size)
                return False
            return True

        async def pump_in() -> None:
            nonlocal holding
            with requests_send:
                try:
                    while (data := await stream.receive()) is not None:
                        holding = True
                        request = _decode(spb.StreamRequest, data)
                        size = len(data)
                        del data  # decoded: one copy in hand while it waits, not two
                        if edge is not None:
                            request = await fault_sites.at_receive(edge, request)
                        await budget.take(size, requests_send)
                        try:
                            await requests_send.send((request, size))
                        except BaseException:
                            budget.give_back(size)
                            raise
                        holding = False
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the session has ended and reads no more

        if edge is None:  # (fault sites stand between the wire and the session)
            stream.deliver = deliver

        try:
            async with trio.open_nursery() as nursery:
                reading = trio.CancelScope()

                async def read() -> None:
                    with reading:
                        await pump_in()

                nursery.start_soon(read)
                responses = _Responses(stream, budget, self.max_bytes, nursery, edge)
                clean = await serve_stream(requests_receive, responses, context, budget)
                requests_receive.close()  # (what the session left unread goes now)
                reading.cancel()  # the session is over: stop reading the client
                if not await responses.finish(limits.idle_timeout):
                    context.log.info(
                        "A StreamPipeline client took no response for %g s after its "
                        "session ended; resetting its stream.",
                        limits.idle_timeout,
                    )
                    return False
            if responses.failure is not None:
                raise responses.failure
            status = "success" if clean else "error"
            return True
        finally:
            metrics.requests.inc(method="StreamPipeline", status=status)
            metrics.request_duration.observe(time.perf_counter() - started, method="StreamPipeline")

    # ------------------------------------------------------------------ unary

    async def execute_pipeline(self, stream: ServerStream) -> bool:
        """Run a pipeline once."""
        return await self._unary(stream, "ExecutePipeline", epb.ExecuteRequest, execute_pipeline)

    async def get_version(self, stream: ServerStream) -> bool:
        """Describe the server and check the client's version."""

        async def version(request: epb.VersionRequest, context: ServiceContext) -> Message:
            return get_version(request, context)

        return await self._unary(stream, "GetVersion", epb.VersionRequest, version)

    async def _unary(
        self,
        stream: ServerStream,
        method: str,
        request_type: type[M],
        handler: Callable[[M, ServiceContext], Awaitable[Any]],
    ) -> bool:
        metrics = self.context.metrics
        started = time.perf_counter()
        status = "error"
        try:
            data = await stream.receive()
            if data is None:
                raise CallError(GrpcStatus.INVALID_ARGUMENT, f"{method} needs a request message.")
            response = await handler(_decode(request_type, data), self.context)
            encoded = response.SerializeToString()
            _check_size(encoded, self.max_bytes)
            await stream.send(encoded)
            if not (isinstance(response, epb.ExecuteResponse) and response.HasField("error")):
                status = "success"
            return True
        finally:
            metrics.requests.inc(method=method, status=status)
            metrics.request_duration.observe(time.perf_counter() - started, method=method)

    # ------------------------------------------------------------------ health

    async def health_check(self, stream: ServerStream) -> bool:
        """The status of one service (NOT_FOUND for a name not served)."""
        data = await stream.receive()
        request = _decode(HealthCheckRequest, data or b"")
        status = self.health.status(request.service)
        if status == HealthCheckResponse.SERVICE_UNKNOWN:
            raise CallError(GrpcStatus.NOT_FOUND, f"Unknown service {request.service!r}.")
        await stream.send(HealthCheckResponse(status=status).SerializeToString())  # type: ignore[arg-type]
        return True

    async def health_watch(self, stream: ServerStream) -> bool:
        """The status of one service now and at every change, until the client leaves."""
        data = await stream.receive()
        request = _decode(HealthCheckRequest, data or b"")
        async for status in self.health.watch(request.service):
            await stream.send(HealthCheckResponse(status=status).SerializeToString())  # type: ignore[arg-type]
        return True


class _Responses:
    """A session's responses, written straight into its call's HTTP/2 stream.

    :func:`serve_stream` sends to it as to a channel. A response goes into h2 at
    once when none waits before it and the stream's window and the socket can take
    it (its budget bytes are then given back: h2 holds them now); otherwise it joins
    a backlog of at most ``RESPONSE_BUFFER``, which a writer task, started when
    first needed, sends under flow control. A full backlog makes ``send_nowait``
    raise ``trio.WouldBlock`` and ``send`` wait, as a full channel would.
    """

    def __init__(
        self,
        stream: ServerStream,
        budget: ByteBudget,
        max_bytes: int,
        nursery: trio.Nursery,
        edge: fault_sites.Edge | None,
    ) -> None:
        self.stream = stream
        self.budget = budget
        self.max_bytes = max_bytes
        self.nursery = nursery
        self.edge = edge  # (under a fault plan every response goes through the writer)
        self.failure: CallError | None = None
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
        return 0 if self._backlog or self.edge is not None else 1

    def statistics(self) -> _Responses:
        """Itself: it answers ``tasks_waiting_receive``."""
        return self

    def send_nowait(self, value: bytes) -> None:
        """Write ``value`` now, or queue it; ``trio.WouldBlock`` if the backlog is full."""
        if self._closed:
            raise trio.ClosedResourceError("the session's responses are closed")
        if len(value) > self.max_bytes:
            # As a transport error (RESOURCE_EXHAUSTED), not an error of the session.
            self.failure = oversized_response(len(value), self.max_bytes)
            self.nursery.cancel_scope.cancel()
            return
        if not self._backlog and self.edge is None and self.stream.send_now(value):
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
                    if self.edge is not None:
                        await fault_sites.at_send(self.edge)
                    try:
                        await self.stream.send(value)
                    except trio.BrokenResourceError:
                        return  # the client is gone; its call is cancelled next
                    self._backlog.popleft()
                    self.budget.give_back(len(value))
                    self.waiting_since = math.inf
                    self._room.unpark_all()
                    if not self._backlog and self.edge is None:
                        break  # caught up: responses go straight to h2 again
        finally:
            if self._backlog:
                # Only a writer that cannot go on (cancelled, or its stream is gone)
                # leaves a backlog: what it could not write goes now, not whenever the
                # call object is collected.
                for value in self._backlog:
                    self.budget.give_back(len(value))
                self._backlog.clear()
            self._writing = False
            self._written.set()

    async def finish(self, idle_timeout: float) -> bool:
        """Let the writer deliver what a finished session left, within a deadline.

        The deadline is the idle timeout, counted from the session's end or from when
        the response being written started to wait, whichever is earlier: a client
        that stopped reading (the usual reason a session ends with responses left) is
        cut off at once, one that reads gets the idle timeout to take the rest.

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


def _fault_edge(stream: ServerStream) -> fault_sites.Edge:
    def invalid(message: str) -> Exception:
        return CallError(GrpcStatus.INVALID_ARGUMENT, message)

    return fault_sites.Edge(trio.sleep, trio.sleep_forever, stream.connection.abort, invalid)
