"""The gRPC server: grpclib inside ``trio_asyncio``, "asyncio edge, Trio core".

Each StreamPipeline call runs two small asyncio pump tasks (wire -> requests channel,
responses channel -> wire) and the Trio session between them, all in one
``asyncio.TaskGroup``, so a client that resets the stream or disconnects cancels the
session within a millisecond. Trio code never calls grpclib.

Auth is checked on every RPC in grpclib's ``RecvRequest`` event, before any handler
runs. Each call's queues share one byte budget with its session; a client that stops
reading loses its session after the idle timeout and its call soon after.

Shutdown drains: stop accepting; live sessions take no more input, finish their work
and answer ``closed`` (reason: shutting down); after the drain timeout the rest are
cancelled (and still answer ``closed``); every call ends with its trailers, then each
connection gets GOAWAY. Each step has a deadline.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import attrs
import trio
import trio_asyncio
from grpclib.const import Status
from grpclib.events import RecvRequest, SendInitialMetadata, listen
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.health.check import ServiceStatus
from grpclib.health.service import Health
from grpclib.server import Stream
from h2.errors import ErrorCodes
from h2.exceptions import StreamClosedError

from remotemedia import faults
from remotemedia.config import ServerConfig
from remotemedia.errors import AuthenticationError, RemoteMediaError, leaf_errors
from remotemedia.service.auth import check_authorization
from remotemedia.service.context import ServiceContext
from remotemedia.service.execution import execute_pipeline, get_version
from remotemedia.service.identity import SERVER_HEADER
from remotemedia.service.reclaim import serve_reclaim
from remotemedia.service.status import grpc_status
from remotemedia.service.streaming import serve_stream
from remotemedia.session.budget import ByteBudget
from remotemedia.session.manager import SessionManager
from remotemedia.transport import fault_sites, grpclib_internals
from remotemedia.transport.connections import GrpcServer
from remotemedia.transport.drain import AllCalls, drain_calls
from remotemedia.transport.framing import PassThroughCodec, check_size, recv_message
from remotemedia.transport.metrics_http import serve_metrics
from remotemedia.transport.native_calls import REQUEST_BUFFER, RESPONSE_BUFFER
from remotemedia.transport.setup import ServerAddress, cannot_listen
from remotemedia.transport.web import start_web
from remotemedia.v1 import execution_grpc, streaming_grpc
from remotemedia.v1 import execution_pb2 as epb
from remotemedia.v1 import streaming_pb2 as spb

__all__ = ["ServerAddress", "serve_grpc"]


TRAILERS_LEAD = 0.05
"""Seconds between the last call's trailers and closing the connections at shutdown."""
_HEALTH_PREFIX = "/grpc.health.v1.Health/"

T = TypeVar("T")


def _rpc_error(error: RemoteMediaError) -> GRPCError:
    return GRPCError(Status[grpc_status(error)], str(error))


def _status_of(group: BaseExceptionGroup[BaseException]) -> GRPCError:
    """The gRPC status to end a call with, from its task group's failure.

    A typed error (ours or grpclib's) becomes its status; anything else is not
    ours to translate, so the group is re-raised for grpclib to log as INTERNAL.
    """
    for error in leaf_errors(group):
        if isinstance(error, RemoteMediaError):
            return _rpc_error(error)
        if isinstance(error, GRPCError):
            return error
    raise group


async def _to_trio(
    channel: trio.MemorySendChannel[T], item: T, budget: ByteBudget, size: int
) -> None:
    """Queue ``item`` for the Trio side (from asyncio), taking ``size`` from ``budget``.

    Crosses to Trio only when it has to wait: the crossing is the expensive part.
    """
    if not budget.try_take(size, channel):
        await trio_asyncio.trio_as_aio(budget.take)(size, channel)
    try:
        try:
            channel.send_nowait(item)
        except trio.WouldBlock:
            await trio_asyncio.trio_as_aio(channel.send)(item)
    except BaseException:
        budget.give_back(size)
        raise


async def _from_trio(channel: trio.MemoryReceiveChannel[T], budget: ByteBudget) -> T:
    """The next item from the Trio side (from asyncio); the caller gives its bytes back."""
    try:
        return channel.receive_nowait()
    except trio.WouldBlock:
        budget.receiver_waiting()
        result: T = await trio_asyncio.trio_as_aio(channel.receive)()
        return result


@attrs.define
class _Sending:
    """When the response being written started to wait for the client (inf: none is)."""

    since: float = math.inf


async def _finish(writer: asyncio.Task[None], sending: _Sending, idle_timeout: float) -> bool:
    """Let the writer deliver the responses a finished session left, within a deadline.

    The deadline is the idle timeout, counted from the session's end or from when
    the response being written started to wait, whichever is earlier: a client that
    stopped reading (the usual reason a session ends with responses left) is cut off
    at once, one that reads gets the idle timeout to take the rest.

    Returns:
        False if the deadline passed; the writer is then cancelled.
    """
    loop = asyncio.get_running_loop()
    ended = loop.time()
    while not writer.done():
        remaining = min(ended, sending.since) + idle_timeout - loop.time()
        if remaining <= 0:
            writer.cancel()
            return False
        await asyncio.wait([writer], timeout=remaining)
    return True


def _reset(stream: Stream[Any, Any]) -> None:
    """End a call with RST_STREAM (CANCEL) now, even if its connection cannot be written.

    Used when the client stopped reading: a half-written response rules out
    trailers, and grpclib's own ``cancel()`` would wait for the socket to drain.
    """
    grpclib_internals.reset_now(stream, ErrorCodes.CANCEL)  # (then no trailers of grpclib's)


def _fault_edge(stream: Stream[Any, Any]) -> fault_sites.Edge:
    def disconnect() -> None:
        grpclib_internals.drop_connection(stream)

    def invalid(message: str) -> Exception:
        return GRPCError(Status.INVALID_ARGUMENT, message)

    return fault_sites.Edge(asyncio.sleep, asyncio.Event().wait, disconnect, invalid)


class _Calls:
    """Counts live calls until grpclib has finished each (its trailers written).

    A drain closes connections once no call is live; counting a call as finished
    when its handler returns would let that race its trailers, and clients would
    see "stream removed" instead of their status.
    """

    def __init__(self) -> None:
        self.live = 0
        self._idle = trio.Event()
        self._idle.set()

    def track(self) -> None:
        """Count the calling grpclib request task until it is done."""
        task = asyncio.current_task()
        assert task is not None, "called from a grpclib handler"
        self.live += 1
        if self._idle.is_set():
            self._idle = trio.Event()
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.live -= 1
        if not self.live:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Wait until no call is live."""
        await self._idle.wait()


class StreamingHandler(streaming_grpc.StreamingPipelineServiceBase):
    """StreamPipeline: pumps between the wire and :func:`serve_stream`."""

    def __init__(self, context: ServiceContext, max_message_bytes: int) -> None:
        self.context = context
        self.max_message_bytes = max_message_bytes
        self.calls = _Calls()

    async def StreamPipeline(self, stream: Stream[spb.StreamRequest, spb.StreamResponse]) -> None:
        """Serve one bidirectional stream."""
        metrics = self.context.metrics
        started = time.perf_counter()
        status = "error"
        budget = ByteBudget(self.context.limits.max_session_buffer_bytes)
        requests_send, requests_receive = trio.open_memory_channel[tuple[spb.StreamRequest, int]](
            REQUEST_BUFFER
        )
        responses_send, responses_receive = trio.open_memory_channel[bytes](RESPONSE_BUFFER)

        # Plans are installed before calls start.
        edge = _fault_edge(stream) if faults.installed() is not None else None

        async def pump_in() -> None:
            try:
                while (received := await recv_message(stream, self.max_message_bytes)) is not None:
                    if edge is not None:
                        received = (await fault_sites.at_receive(edge, received[0]), received[1])
                    await _to_trio(requests_send, received, budget, received[1])
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # the session has ended and reads no more
            finally:
                requests_send.close()

        sending = _Sending()

        async def pump_out() -> None:
            loop = asyncio.get_running_loop()
            try:
                while True:
                    try:
                        message = await _from_trio(responses_receive, budget)
                    except trio.EndOfChannel:
                        return
                    budget.give_back(check_size(message, self.max_message_bytes))
                    sending.since = loop.time()
                    if edge is not None:
                        await fault_sites.at_send(edge)
                    try:
                        # Serialized already: _Codec sends the bytes as they are.
                        await stream.send_message(message)  # type: ignore[arg-type]
                    except (StreamTerminatedError, StreamClosedError):
                        return  # the client is gone; grpclib cancels this handler next
                    sending.since = math.inf
            finally:
                # The session must never block on a response nobody will send.
                responses_receive.close()

        async def session() -> bool:
            clean: bool = await trio_asyncio.trio_as_aio(serve_stream)(
                requests_receive, responses_send, self.context, budget
            )
            requests_receive.close()  # (what the session left unread goes now)
            return clean

        self.calls.track()
        failure: GRPCError | None = None
        try:
            try:
                async with asyncio.TaskGroup() as group:
                    reader = group.create_task(pump_in())
                    writer = group.create_task(pump_out())
                    clean = await group.create_task(session())
                    reader.cancel()  # the session is over: stop reading the client
                    idle_timeout = self.context.limits.idle_timeout
                    if not await _finish(writer, sending, idle_timeout):
                        clean = False
                        self.context.log.info(
                            "A StreamPipeline client took no response for %g s after its "
                            "session ended; resetting its stream.",
                            idle_timeout,
                        )
                        _reset(stream)
                status = "success" if clean else "error"
            except BaseExceptionGroup as group_error:
                failure = _status_of(group_error)
            # Raised outside the except block: on Python 3.11.2 an exception raised
            # inside ``except*`` reaches grpclib wrapped in a group (UNKNOWN status).
            if failure is not None:
                raise failure
        finally:
            metrics.requests.inc(method="StreamPipeline", status=status)
            metrics.request_duration.observe(time.perf_counter() - started, method="StreamPipeline")


class ExecutionHandler(execution_grpc.PipelineExecutionServiceBase):
    """ExecutePipeline and GetVersion."""

    def __init__(self, context: ServiceContext, max_message_bytes: int, calls: _Calls) -> None:
        self.context = context
        self.max_message_bytes = max_message_bytes
        self.calls = calls

    async def ExecutePipeline(
        self, stream: Stream[epb.ExecuteRequest, epb.ExecuteResponse]
    ) -> None:
        """Run a pipeline once."""
        await self._unary(stream, "ExecutePipeline", execute_pipeline)

    async def GetVersion(self, stream: Stream[epb.VersionRequest, epb.VersionResponse]) -> None:
        """Describe the server and check the client's version."""

        async def version(request: epb.VersionRequest, context: ServiceContext) -> Any:
            return get_version(request, context)

        await self._unary(stream, "GetVersion", version)

    async def _unary(
        self,
        stream: Stream[Any, Any],
        method: str,
        handler: Callable[[Any, ServiceContext], Awaitable[Any]],
    ) -> None:
        metrics = self.context.metrics
        started = time.perf_counter()
        status = "error"
        self.calls.track()
        try:
            received = await recv_message(stream, self.max_message_bytes)
            if received is None:
                raise GRPCError(Status.INVALID_ARGUMENT, f"{method} needs a request message.")
            request = received[0]
            try:
                response = await trio_asyncio.trio_as_aio(handler)(request, self.context)
            except RemoteMediaError as error:
                raise _rpc_error(error) from None
            check_size(response, self.max_message_bytes)
            await stream.send_message(response)
            if not (isinstance(response, epb.ExecuteResponse) and response.HasField("error")):
                status = "success"
        finally:
            metrics.requests.inc(method=method, status=status)
            metrics.request_duration.observe(time.perf_counter() - started, method=method)


def _authenticate(config: ServerConfig) -> Callable[[RecvRequest], Coroutine[Any, Any, None]]:
    async def on_request(event: RecvRequest) -> None:
        if config.auth.exempt_health and event.method_name.startswith(_HEALTH_PREFIX):
            return
        header = event.metadata.get("authorization")
        try:
            check_authorization(header if isinstance(header, str) else None, config.auth)
        except AuthenticationError as error:
            raise GRPCError(Status.UNAUTHENTICATED, str(error)) from None

    return on_request


async def _set_status(status: ServiceStatus, value: bool) -> None:
    status.set(value)


def _identify(server_id: str) -> Callable[[SendInitialMetadata], Coroutine[Any, Any, None]]:
    # Headers only: a call refused before its first message stays trailers-only.
    async def on_send_initial_metadata(event: SendInitialMetadata) -> None:
        event.metadata[SERVER_HEADER] = server_id

    return on_send_initial_metadata


async def serve_grpc(
    config: ServerConfig,
    context: ServiceContext,
    shutdown: trio.Event,
    *,
    task_status: trio.TaskStatus[ServerAddress] = trio.TASK_STATUS_IGNORED,
) -> None:
    """:func:`~remotemedia.transport.serving.serve` on the grpclib transport."""
    manager = context.manager
    host, port = config.host_port
    async with trio_asyncio.open_loop() as loop, trio.open_nursery() as nursery:
        # grpclib's Server must be created inside the running asyncio loop.
        serving = ServiceStatus()
        serving.set(True)
        streaming = StreamingHandler(context, config.limits.max_message_bytes)
        execution = ExecutionHandler(context, config.limits.max_message_bytes, streaming.calls)
        server = GrpcServer(
            [streaming, execution, Health({streaming: [serving], execution: [serving]})],
            config.limits,
            codec=PassThroughCodec(),
        )
        loop.set_exception_handler(server.contain_connection_errors)
        listen(server, RecvRequest, _authenticate(config))
        listen(server, SendInitialMetadata, _identify(context.server_id))
        try:
            await trio_asyncio.aio_as_trio(server.start)(
                host, port, reuse_port=config.reuse_port or None
            )
        except OSError as error:
            raise cannot_listen(host, port, error) from None
        try:
            bound = server.port
            nursery.start_soon(serve_reclaim, manager)
            if context.workers is not None:  # builds of model environments outlive sessions
                await nursery.start(context.workers.environments.serve)
            metrics_port = None
            if config.metrics_port is not None:
                metrics_port = await nursery.start(
                    serve_metrics, context.metrics.render, config.metrics_host, config.metrics_port
                )
            web_stop = trio.Event()
            web, web_port = await start_web(nursery, config, context, web_stop)
            task_status.started(ServerAddress(host, bound, metrics_port, web_port))
            await shutdown.wait()
            # NOT_SERVING at once (Watch callers are told, on asyncio's side).
            await trio_asyncio.aio_as_trio(_set_status)(serving, False)
            await trio.sleep(config.drain_delay)  # still serving, while balancers notice
            await _drain(server, manager, AllCalls(streaming.calls, web), config.drain_timeout)
            web_stop.set()
        finally:
            server.close()
            server.close_connections()
            with trio.CancelScope(shield=True), trio.move_on_after(2.0):
                await trio_asyncio.aio_as_trio(server.wait_closed)()
            nursery.cancel_scope.cancel()


async def _drain(
    server: GrpcServer, manager: SessionManager, calls: AllCalls, timeout: float
) -> None:
    """Stop accepting; live sessions take no more input, finish and say ``closed``.

    See :func:`~remotemedia.transport.drain.drain_calls`. Only the listening socket
    is closed first: grpclib's ``Server.close()`` would cancel every handler at once, before
    sessions could tell their clients why.
    """
    server.stop_listening()
    await drain_calls(manager, calls, timeout)
    # The last trailers are written; the connections close next (GOAWAY first). A
    # grpclib client ends every stream it still has open when the connection goes,
    # even one whose trailers arrived in the same read but were not handed to its
    # reader yet: a moment between the two keeps them apart.
    await trio.sleep(TRAILERS_LEAD)
