"""The native transport's RPCs: each call's headers checked, routed, run, and ended with a status.

Every call goes through :meth:`Calls.run`: the request must be a gRPC POST, its
``authorization`` is checked (health exempt if configured), ``grpc-timeout`` becomes
a deadline, and whatever the handler raises becomes the call's status — a typed
error its status (:func:`~remotemedia.service.status.grpc_status`), anything else
INTERNAL, logged. The handlers are the same service functions the grpclib transport
calls, on the same Trio channels, without a second event loop between them.
"""

from __future__ import annotations

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
from remotemedia.transport.messages import CallError, GrpcStatus, parse_timeout
from remotemedia.v1 import execution_pb2 as epb
from remotemedia.v1 import streaming_pb2 as spb

__all__ = ["Calls"]

logger = logging.getLogger(__name__)

REQUEST_BUFFER = 8
RESPONSE_BUFFER = 32
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
        raise CallError(
            GrpcStatus.RESOURCE_EXHAUSTED,
            f"A response of {len(data)} bytes exceeds the {max_bytes}-byte message limit; "
            "send smaller inputs or raise --max-message-mb.",
        )
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
        responses_send, responses_receive = trio.open_memory_channel[bytes](RESPONSE_BUFFER)
        edge = _fault_edge(stream) if faults.installed() is not None else None
        waiting_since = [math.inf]  # when the response being written began to wait

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
                        if edge is not None:
                            request = await fault_sites.at_receive(edge, request)
                        size = len(data)
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

        async def pump_out() -> None:
            with responses_receive:
                while True:
                    try:
                        message = responses_receive.receive_nowait()
                    except trio.WouldBlock:
                        budget.receiver_waiting()
                        try:
                            message = await responses_receive.receive()
                        except trio.EndOfChannel:
                            return
                    except trio.EndOfChannel:
                        return
                    budget.give_back(_check_size(message, self.max_bytes))
                    waiting_since[0] = trio.current_time()
                    if edge is not None:
                        await fault_sites.at_send(edge)
                    try:
                        await stream.send(message)
                    except trio.BrokenResourceError:
                        return  # the client is gone; its call is cancelled next
                    waiting_since[0] = math.inf

        try:
            async with trio.open_nursery() as nursery:
                reading = trio.CancelScope()

                async def read() -> None:
                    with reading:
                        await pump_in()

                nursery.start_soon(read)
                writing = trio.CancelScope()
                written = trio.Event()

                async def write() -> None:
                    try:
                        with writing:
                            await pump_out()
                    finally:
                        written.set()

                nursery.start_soon(write)
                clean = await serve_stream(requests_receive, responses_send, context, budget)
                reading.cancel()  # the session is over: stop reading the client
                if not await _finish(written, waiting_since, limits.idle_timeout):
                    writing.cancel()
                    logger.info(
                        "A StreamPipeline client took no response for %g s after its "
                        "session ended; resetting its stream.",
                        limits.idle_timeout,
                    )
                    return False
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


async def _finish(written: trio.Event, waiting_since: list[float], idle_timeout: float) -> bool:
    """Let the writer deliver the responses a finished session left, within a deadline.

    The deadline is the idle timeout, counted from the session's end or from when
    the response being written started to wait, whichever is earlier: a client that
    stopped reading (the usual reason a session ends with responses left) is cut off
    at once, one that reads gets the idle timeout to take the rest.

    Returns:
        False if the deadline passed.
    """
    ended = trio.current_time()
    while not written.is_set():
        deadline = min(ended, waiting_since[0]) + idle_timeout
        if trio.current_time() >= deadline:
            return False
        with trio.move_on_at(deadline):
            await written.wait()
    return True


def _fault_edge(stream: ServerStream) -> fault_sites.Edge:
    def invalid(message: str) -> Exception:
        return CallError(GrpcStatus.INVALID_ARGUMENT, message)

    return fault_sites.Edge(trio.sleep, trio.sleep_forever, stream.connection.abort, invalid)
