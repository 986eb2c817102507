"""The native transport's RPCs: each call's headers checked, routed, run, and ended with a status.

Every call goes through :meth:`Calls.run`: the request must be a gRPC POST, its
``authorization`` is checked (health exempt if configured), ``grpc-timeout`` becomes
a deadline, and whatever the handler raises becomes the call's status — a typed
error its status (:func:`~remotemedia.service.status.grpc_status`), anything else
INTERNAL, logged. The handlers are the same service functions the grpclib transport
calls, without a second event loop between them; the stream is the call's
:class:`~remotemedia.service.wire.Wire` and :mod:`remotemedia.service.calls` runs
the call. A StreamPipeline call costs no task of its own per message in the common
case: the connection's reader hands each request straight to the session's channel
when it has room (``deliver``), and the session's responses go straight into h2 when
nothing waits before them (``send_now``); a pump task runs only for a backlog.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio
from google.protobuf.message import DecodeError, Message
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from remotemedia.config import AuthConfig
from remotemedia.errors import AuthenticationError, RemoteMediaError
from remotemedia.service.auth import check_authorization
from remotemedia.service.calls import (
    CallEnd,
    LiveCalls,
    call_failure,
    observed,
    run_stream_call,
    run_unary_call,
)
from remotemedia.service.context import ServiceContext
from remotemedia.service.execution import execute_pipeline, get_version
from remotemedia.service.status import grpc_status
from remotemedia.service.wire import CallOrigin
from remotemedia.transport.h2_connection import ServerStream
from remotemedia.transport.health import HealthState
from remotemedia.transport.messages import CallError, GrpcStatus, parse_timeout
from remotemedia.v1 import execution_pb2 as epb

__all__ = ["Calls"]

logger = logging.getLogger(__name__)

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


def _status_of(error: BaseException) -> CallError | None:
    """The status a failed call ends with, or None if the error is not ours to type."""
    failure = call_failure(error)
    if isinstance(failure, CallError):
        return failure
    if isinstance(failure, RemoteMediaError):
        return CallError(GrpcStatus[grpc_status(failure)], str(failure))
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
        self.calls = LiveCalls()
        self._routes: dict[str, Callable[[ServerStream], Awaitable[bool]]] = {
            _STREAMING + "StreamPipeline": self.stream_pipeline,
            _EXECUTION + "ExecutePipeline": self.execute_pipeline,
            _EXECUTION + "GetVersion": self.get_version,
            _HEALTH + "Check": self.health_check,
            _HEALTH + "Watch": self.health_watch,
        }

    @property
    def live(self) -> int:
        """Calls not finished (their trailers not written)."""
        return self.calls.live

    async def wait_idle(self) -> None:
        """Wait until no call is live (each has written its trailers)."""
        await self.calls.wait_idle()

    async def run(self, stream: ServerStream) -> None:
        """Run one call to its end, its trailers written (unless the client reset it)."""
        async with self.calls.counting():
            await self._run(stream)

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

    # ------------------------------------------------------------------ the service's calls

    async def stream_pipeline(self, stream: ServerStream) -> bool:
        """Serve one bidirectional stream (the stream is the call's wire).

        Returns:
            False if the client took no response for the idle timeout after its
            session ended (its stream is then reset, as no trailers can follow a
            half-written response).
        """
        with observed(self.context.metrics, "StreamPipeline") as outcome:
            origin = CallOrigin("grpc")
            origin.take_traceparent(stream.header(b"traceparent"))
            end = await run_stream_call(stream, self.context, origin)
            outcome.success = end is CallEnd.CLEAN
            return end is not CallEnd.STALLED

    async def execute_pipeline(self, stream: ServerStream) -> bool:
        """Run a pipeline once."""
        await run_unary_call(
            stream, self.context, "ExecutePipeline", epb.ExecuteRequest, execute_pipeline
        )
        return True

    async def get_version(self, stream: ServerStream) -> bool:
        """Describe the server and check the client's version."""

        async def version(request: epb.VersionRequest, context: ServiceContext) -> Message:
            return get_version(request, context)

        await run_unary_call(stream, self.context, "GetVersion", epb.VersionRequest, version)
        return True

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
