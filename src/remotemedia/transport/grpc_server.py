"""The gRPC server: grpclib inside ``trio_asyncio``, "asyncio edge, Trio core".

Each call is run by the service's call runner (:mod:`remotemedia.service.calls`) in
Trio, over the call's grpclib stream seen as a :class:`~remotemedia.service.wire.Wire`
whose reads and writes cross to asyncio; a client that resets the stream or
disconnects cancels grpclib's handler, and with it the session, within a millisecond.

Auth is checked on every RPC in grpclib's ``RecvRequest`` event, before any handler
runs. Each call's queues share one byte budget with its session; a client that stops
reading loses its session after the idle timeout and its call soon after.

It is one edge of a server (:mod:`~remotemedia.transport.serving` opens it beside
the others and runs the drain): at shutdown it stops accepting, and once every call
has ended with its trailers, each connection gets GOAWAY. Each step has a deadline.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

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

from remotemedia.config import ServerConfig
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
from remotemedia.service.identity import SERVER_HEADER
from remotemedia.service.status import grpc_status
from remotemedia.service.wire import CallOrigin
from remotemedia.transport import grpclib_internals
from remotemedia.transport.connections import GrpcServer
from remotemedia.transport.edge import Edge
from remotemedia.transport.framing import PassThroughCodec, recv_data
from remotemedia.transport.setup import cannot_listen
from remotemedia.v1 import execution_grpc, streaming_grpc
from remotemedia.v1 import execution_pb2 as epb
from remotemedia.v1 import streaming_pb2 as spb

__all__ = ["open_grpclib_edge"]


TRAILERS_LEAD = 0.05
"""Seconds between the last call's trailers and closing the connections at shutdown."""
_HEALTH_PREFIX = "/grpc.health.v1.Health/"

T = TypeVar("T")


def _rpc_error(error: RemoteMediaError) -> GRPCError:
    return GRPCError(Status[grpc_status(error)], str(error))


def _status_of(error: BaseException) -> GRPCError:
    """The gRPC status to end a call with, from what its tasks raised.

    A typed error (ours or grpclib's) becomes its status; anything else is not
    ours to translate, so it is re-raised for grpclib to log as INTERNAL.
    """
    failure = call_failure(error)
    if isinstance(failure, RemoteMediaError):
        return _rpc_error(failure)
    if isinstance(failure, GRPCError):
        return failure
    raise error


def _reset(stream: Stream[Any, Any]) -> None:
    """End a call with RST_STREAM (CANCEL) now, even if its connection cannot be written.

    Used when the client stopped reading: a half-written response rules out
    trailers, and grpclib's own ``cancel()`` would wait for the socket to drain.
    """
    grpclib_internals.reset_now(stream, ErrorCodes.CANCEL)  # (then no trailers of grpclib's)


class _GrpclibWire:
    """A grpclib unary call as the runner's :class:`~remotemedia.service.wire.Wire`.

    Its one request and one response each cross to grpclib's asyncio side.
    """

    def __init__(self, stream: Stream[Any, Any], max_bytes: int) -> None:
        self.stream = stream
        self.max_bytes = max_bytes
        self.deliver: Callable[[bytes], bool] | None = None  # (not used: the runner reads)

    async def receive(self) -> bytes | None:
        """The request's bytes (size checked before it is read)."""
        data: bytes | None = await trio_asyncio.aio_as_trio(recv_data)(self.stream, self.max_bytes)
        return data

    def send_now(self, data: bytes) -> bool:
        """Never at once: grpclib writes only from asyncio."""
        return False

    async def send(self, data: bytes) -> None:
        """Write the response (serialized already: the codec passes it as it is)."""
        try:
            await trio_asyncio.aio_as_trio(self.stream.send_message)(data)
        except (StreamTerminatedError, StreamClosedError):
            raise trio.BrokenResourceError("the client is gone") from None

    def abort(self) -> None:
        """Drop the call's TCP connection."""
        grpclib_internals.drop_connection(self.stream)


class _PumpedWire(_GrpclibWire):
    """A grpclib StreamPipeline call as a wire, pumped on asyncio's side.

    Crossing between the two loops is the expensive part, so a message crosses only
    when one side must wait. An asyncio reader hands each request straight to the
    session (``deliver``) or, when it cannot take it, queues it for the runner's
    reader; an asyncio writer sends the responses the runner queues (``send_now``),
    one after another without a wake-up between them. Each queue holds at most
    :data:`_AHEAD_BYTES` (and always one message): beyond that the reader waits, and
    the runner keeps the responses in its own backlog, counted in the call's budget.
    Both sides of each queue are objects of one thread: Trio wakes the writer with an
    asyncio event, asyncio wakes Trio through parking lots.
    """

    def __init__(self, stream: Stream[Any, Any], max_bytes: int) -> None:
        super().__init__(stream, max_bytes)
        self._requests: collections.deque[bytes] = collections.deque()
        self._requests_bytes = 0
        self._ended = False
        self._failure: Exception | None = None
        self._arrived = trio.lowlevel.ParkingLot()
        self._taken = trio.lowlevel.ParkingLot()
        self._responses: collections.deque[bytes] = collections.deque()
        self._responses_bytes = 0
        self._closing = False
        self._wake = asyncio.Event()
        self._sent = trio.lowlevel.ParkingLot()

    # -- asyncio's side --------------------------------------------------------------

    async def pump_in(self) -> None:
        """Read the client's requests until it half-closes (or sends a bad one)."""
        requests = self._requests
        try:
            while (data := await recv_data(self.stream, self.max_bytes)) is not None:
                deliver = self.deliver
                if deliver is not None:
                    # What waits goes first (in order), straight to the session if it
                    # has room again; then this one, if nothing waits before it.
                    while requests and deliver(requests[0]):
                        self._requests_bytes -= len(requests.popleft())
                        self._taken.unpark_all()
                    if not requests and deliver(data):
                        continue
                if requests and self._requests_bytes + len(data) > _AHEAD_BYTES:
                    await trio_asyncio.trio_as_aio(self._room)(len(data))
                requests.append(data)
                self._requests_bytes += len(data)
                self._arrived.unpark_all()
        except Exception as error:  # a malformed stream: the runner's receive raises it
            self._failure = error
        finally:
            self._ended = True
            self._arrived.unpark_all()

    async def pump_out(self) -> None:
        """Send what the runner queues, until closed (or the client is gone)."""
        responses = self._responses
        try:
            while True:
                while not responses:
                    if self._closing:
                        return
                    self._wake.clear()
                    if not responses and not self._closing:
                        await self._wake.wait()
                data = responses[0]
                try:
                    await self.stream.send_message(data)
                except (StreamTerminatedError, StreamClosedError):
                    return  # the client is gone; grpclib cancels the handler next
                responses.popleft()
                self._responses_bytes -= len(data)
                self._sent.unpark_all()
        finally:
            self._closing = True
            self._sent.unpark_all()

    async def finish(self, writer: asyncio.Task[None], idle_timeout: float) -> bool:
        """Let the writer send what it holds, within the idle timeout; False if it could not."""
        self._closing = True
        self._wake.set()
        await asyncio.wait([writer], timeout=idle_timeout)
        if writer.done():
            return True
        writer.cancel()
        return False

    # -- Trio's side (the runner's) --------------------------------------------------

    async def _room(self, size: int) -> None:
        # Checked and parked in one Trio task: a check on asyncio's side would miss a
        # wake-up that comes while the crossing is under way.
        while self._requests and self._requests_bytes + size > _AHEAD_BYTES:
            await self._taken.park()

    async def receive(self) -> bytes | None:
        """The next request the reader queued; None once the client half-closed."""
        while not self._requests:
            if self._failure is not None:
                raise self._failure
            if self._ended:
                return None
            await self._arrived.park()
        data = self._requests.popleft()
        self._requests_bytes -= len(data)
        self._taken.unpark_all()
        return data

    def send_now(self, data: bytes) -> bool:
        """Queue a response for the writer if the queue has room."""
        if self._closing:
            return False
        if self._responses and self._responses_bytes + len(data) > _AHEAD_BYTES:
            return False
        self._responses.append(data)
        self._responses_bytes += len(data)
        self._wake.set()
        return True

    async def send(self, data: bytes) -> None:
        """Queue a response for the writer, waiting while the queue is full."""
        while not self.send_now(data):
            if self._closing:
                raise trio.BrokenResourceError("the client is gone")
            await self._sent.park()


_AHEAD_BYTES = 256 * 1024
"""Bytes a grpclib call holds in each of its queues between the loops (beyond one
message): ahead of the session, requests; ahead of the socket, responses."""


class _Calls:
    """Counts live calls until grpclib has finished each (its trailers written).

    A drain closes connections once no call is live; counting a call as finished
    when its handler returns would let that race its trailers, and clients would
    see "stream removed" instead of their status.
    """

    def __init__(self) -> None:
        self.counter = LiveCalls()

    @property
    def live(self) -> int:
        """Calls not finished."""
        return self.counter.live

    def track(self) -> None:
        """Count the calling grpclib request task until it is done."""
        task = asyncio.current_task()
        assert task is not None, "called from a grpclib handler"
        self.counter.begin()
        task.add_done_callback(lambda _: self.counter.end())

    async def wait_idle(self) -> None:
        """Wait until no call is live."""
        await self.counter.wait_idle()


class StreamingHandler(streaming_grpc.StreamingPipelineServiceBase):
    """StreamPipeline: the call runner, over a grpclib stream."""

    def __init__(self, context: ServiceContext, max_message_bytes: int) -> None:
        self.context = context
        self.max_message_bytes = max_message_bytes
        self.calls = _Calls()

    async def StreamPipeline(self, stream: Stream[spb.StreamRequest, spb.StreamResponse]) -> None:
        """Serve one bidirectional stream."""
        self.calls.track()
        wire = _PumpedWire(stream, self.max_message_bytes)
        failure: GRPCError | None = None
        with observed(self.context.metrics, "StreamPipeline") as outcome:
            try:
                async with asyncio.TaskGroup() as group:
                    reader = group.create_task(wire.pump_in())
                    writer = group.create_task(wire.pump_out())
                    try:
                        origin = CallOrigin("grpc")
                        metadata = stream.metadata
                        if metadata is not None:
                            origin.take_traceparent(metadata.get("traceparent"))
                        end = await trio_asyncio.trio_as_aio(run_stream_call)(
                            wire, self.context, origin
                        )
                    finally:
                        reader.cancel()  # the session is over: read the client no more
                    idle_timeout = self.context.limits.idle_timeout
                    if end is CallEnd.STALLED or not await wire.finish(writer, idle_timeout):
                        writer.cancel()
                        _reset(stream)
                        end = CallEnd.STALLED
                outcome.success = end is CallEnd.CLEAN
            except Exception as error:
                failure = _status_of(error)
        # Raised outside the except block: on Python 3.11.2 an exception raised
        # inside ``except*`` reaches grpclib wrapped in a group (UNKNOWN status).
        if failure is not None:
            raise failure


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
        await self._unary(stream, "ExecutePipeline", epb.ExecuteRequest, execute_pipeline)

    async def GetVersion(self, stream: Stream[epb.VersionRequest, epb.VersionResponse]) -> None:
        """Describe the server and check the client's version."""

        async def version(request: epb.VersionRequest, context: ServiceContext) -> Any:
            return get_version(request, context)

        await self._unary(stream, "GetVersion", epb.VersionRequest, version)

    async def _unary(
        self,
        stream: Stream[Any, Any],
        method: str,
        request_type: type[Any],
        handler: Callable[[Any, ServiceContext], Awaitable[Any]],
    ) -> None:
        self.calls.track()
        wire = _GrpclibWire(stream, self.max_message_bytes)
        failure: GRPCError | None = None
        try:
            await trio_asyncio.trio_as_aio(run_unary_call)(
                wire, self.context, method, request_type, handler
            )
        except Exception as error:
            failure = _status_of(error)
        if failure is not None:
            raise failure


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


@asynccontextmanager
async def open_grpclib_edge(config: ServerConfig, context: ServiceContext) -> AsyncIterator[Edge]:
    """Listen for gRPC calls with grpclib (in a ``trio_asyncio`` loop) until the block ends.

    Leaving the block closes the connections (GOAWAY) after their calls' trailers;
    :mod:`~remotemedia.transport.serving` runs the drain in between.

    Raises:
        ConfigError: The address cannot be bound.
    """
    host, port = config.host_port
    async with trio_asyncio.open_loop() as loop:
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

        async def stop_accepting() -> None:
            # NOT_SERVING at once (Watch callers are told, on asyncio's side).
            await trio_asyncio.aio_as_trio(_set_status)(serving, False)
            await trio.sleep(config.drain_delay)  # still serving, while balancers notice
            # Only the listening socket: grpclib's ``Server.close()`` would cancel every
            # handler at once, before sessions could tell their clients why.
            server.stop_listening()

        try:
            yield Edge(server.port, streaming.calls, stop_accepting)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2.0 + TRAILERS_LEAD):
                # The last trailers are written; the connections close next (GOAWAY
                # first). A grpclib client ends every stream it still has open when the
                # connection goes, even one whose trailers arrived in the same read but
                # were not handed to its reader yet: a moment between the two keeps
                # them apart.
                await trio.sleep(TRAILERS_LEAD)
                server.close()
                server.close_connections()
                await trio_asyncio.aio_as_trio(server.wait_closed)()
