"""End-to-end fixtures: a real gRPC server on loopback, and a raw wire-level client.

The server runs in the test's own Trio run (the grpclib edge opens its trio-asyncio
loop); clients reach it over a real TCP socket on 127.0.0.1, so the clock is the
real one. Every test guards itself with ``trio.fail_after``.

``open_raw_stream`` drives the StreamPipeline wire directly with grpclib (inside
trio-asyncio), so tests can send sequences no well-behaved client would.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
import trio
import trio_asyncio
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from h2.exceptions import ProtocolError as H2ProtocolError
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    wrap_client_stream,
)

from remotemedia.config import TRANSPORTS, AuthConfig, Limits, NodeDefaults, ServerConfig
from remotemedia.nodes import NodeRegistry
from remotemedia.transport.serving import ServerAddress, serve
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import execution_pb2 as epb
from remotemedia.v1 import streaming_grpc
from remotemedia.v1 import streaming_pb2 as spb

TIMEOUT = 15.0
"""Seconds any one test may take (real clock, real sockets)."""

STOP_TIMEOUT = 10.0
"""Seconds a server may take to stop at teardown."""

TOKEN = "s3cret-token"

CLOSE = spb.StreamControl.COMMAND_CLOSE
CANCEL = spb.StreamControl.COMMAND_CANCEL

ServerFactory = Callable[..., Awaitable[ServerAddress]]


# --------------------------------------------------------------------------- server


def make_config(
    *,
    transport: str = "native",
    tokens: Sequence[str] = (),
    metrics_port: int | None = None,
    exempt_health: bool = True,
    drain_timeout: float = 2.0,
    drain_delay: float = 0.0,
    web_port: int | None = None,
    web_allowed_origins: Sequence[str] = (),
    web_allowed_hosts: Sequence[str] = (),
    env_dir: str | None = None,
    node_config: Mapping[str, NodeDefaults] | None = None,
    **limits: Any,
) -> ServerConfig:
    """A loopback server config on a free port; ``limits`` are :class:`Limits` fields."""
    return ServerConfig(
        bind="127.0.0.1:0",
        auth=AuthConfig(tokens=tuple(tokens), required=bool(tokens), exempt_health=exempt_health),
        limits=Limits(**limits),
        metrics_port=metrics_port,
        drain_timeout=drain_timeout,
        drain_delay=drain_delay,
        transport=transport,
        web_port=web_port,
        web_allowed_origins=tuple(web_allowed_origins),
        web_allowed_hosts=tuple(web_allowed_hosts),
        env_dir=env_dir,
        node_config=dict(node_config or {}),
    )


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    """Each gRPC transport in turn: the whole e2e suite runs against both."""
    name: str = request.param
    return name


@pytest.fixture
async def start_server(transport: str) -> AsyncIterator[ServerFactory]:
    """A factory: ``await start_server(**make_config kwargs)`` starts a server.

    ``registry=`` serves other node types than the built-in ones.

    Each server runs until teardown, which sets its shutdown event (pass
    ``shutdown=`` to set it earlier) and waits for it to stop, failing the test if it
    does not within STOP_TIMEOUT.
    """
    shutdowns: list[trio.Event] = []
    async with trio.open_nursery() as nursery:

        async def start(
            *,
            shutdown: trio.Event | None = None,
            registry: NodeRegistry | None = None,
            **options: Any,
        ) -> ServerAddress:
            shutdown = trio.Event() if shutdown is None else shutdown
            shutdowns.append(shutdown)
            address: ServerAddress = await nursery.start(
                functools.partial(serve, registry=registry),
                make_config(transport=transport, **options),
                shutdown,
            )
            return address

        yield start
        for shutdown in shutdowns:
            shutdown.set()
        nursery.cancel_scope.deadline = trio.current_time() + STOP_TIMEOUT
    if nursery.cancel_scope.cancelled_caught:
        pytest.fail(f"the server did not stop within {STOP_TIMEOUT} s of its shutdown event")


@pytest.fixture
async def server(start_server: ServerFactory) -> ServerAddress:
    """A server with the default limits and no auth, with its browser edge on."""
    return await start_server(web_port=0)


# --------------------------------------------------------------------------- wire messages


def manifest(
    nodes: Sequence[tuple[str, str] | tuple[str, str, Any]],
    connections: Sequence[tuple[str, str]] = (),
) -> epb.PipelineManifest:
    """A wire manifest from ``(id, node_type[, params])`` and ``(from, to)`` pairs.

    ``params`` may be a dict (sent as JSON) or a str (sent verbatim).
    """
    wire = epb.PipelineManifest(version="v1", metadata=epb.ManifestMetadata(name="e2e"))
    for node_id, node_type, *rest in nodes:
        params = rest[0] if rest else {}
        text = params if isinstance(params, str) else json.dumps(params)
        wire.nodes.add(id=node_id, node_type=node_type, params=text)
    for source, target in connections:
        wire.connections.add(**{"from": source, "to": target})
    return wire


PASS = manifest([("pass", "PassThrough")])
CHAIN = manifest([("a", "PassThrough"), ("b", "PassThrough")], [("a", "b")])


def text_buffer(text: str) -> pb.DataBuffer:
    return pb.DataBuffer(text=pb.TextBuffer(text_data=text.encode(), encoding="utf-8"))


def json_buffer(value: Any) -> pb.DataBuffer:
    return pb.DataBuffer(json=pb.JsonData(json_payload=json.dumps(value)))


def audio_buffer(
    samples: np.ndarray,
    *,
    fmt: int = pb.AUDIO_FORMAT_F32,
    sample_rate: int = 16_000,
    channels: int = 1,
    num_samples: int | None = None,
) -> pb.DataBuffer:
    """An AudioBuffer of ``samples`` encoded as-is (the dtype must match ``fmt``)."""
    dtype = {pb.AUDIO_FORMAT_F32: "<f4", pb.AUDIO_FORMAT_I16: "<i2", pb.AUDIO_FORMAT_I32: "<i4"}
    raw = np.asarray(samples, dtype=dtype[fmt])
    return pb.DataBuffer(
        audio=pb.AudioBuffer(
            samples=raw.tobytes(),
            sample_rate=sample_rate,
            channels=channels,
            format=fmt,
            num_samples=raw.size if num_samples is None else num_samples,
        )
    )


def audio_samples(buffer: pb.DataBuffer) -> np.ndarray:
    """The samples of an F32 AudioBuffer (what the server sends)."""
    assert buffer.WhichOneof("data_type") == "audio"
    assert buffer.audio.format == pb.AUDIO_FORMAT_F32
    return np.frombuffer(buffer.audio.samples, dtype="<f4")


def init(
    wire_manifest: epb.PipelineManifest | None = PASS,
    *,
    client_version: str = "v1",
    expected_chunk_size: int = 0,
    **resource_limits: int,
) -> spb.StreamRequest:
    """A StreamInit request; ``resource_limits`` are ResourceLimits fields."""
    request = spb.StreamInit(
        client_version=client_version,
        expected_chunk_size=expected_chunk_size,
        resource_limits=pb.ResourceLimits(**resource_limits),
    )
    if wire_manifest is not None:
        request.manifest.CopyFrom(wire_manifest)
    return spb.StreamRequest(init=request)


def binary_buffer(size: int) -> pb.DataBuffer:
    """``size`` zero bytes as a BinaryBuffer."""
    return pb.DataBuffer(binary=pb.BinaryBuffer(data=bytes(size), mime_type="x/zeros"))


def chunk(buffer: pb.DataBuffer, sequence: int, node_id: str = "pass") -> spb.StreamRequest:
    return spb.StreamRequest(
        data_chunk=spb.DataChunk(node_id=node_id, buffer=buffer, sequence=sequence)
    )


def control(command: int) -> spb.StreamRequest:
    return spb.StreamRequest(control=spb.StreamControl(command=command))


def kind(response: spb.StreamResponse) -> str:
    return response.WhichOneof("response")


def is_status(response: spb.StreamResponse) -> bool:
    return kind(response) == "result" and "_status" in response.result.data_outputs


def status_text(response: spb.StreamResponse) -> str:
    return response.result.data_outputs["_status"].text.text_data.decode()


# --------------------------------------------------------------------------- raw client


def aio(function: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """Call an asyncio coroutine function from Trio (inside a trio-asyncio loop)."""
    return trio_asyncio.aio_as_trio(function)  # type: ignore[no-any-return]


@asynccontextmanager
async def open_channel(
    address: ServerAddress, config: Configuration | None = None
) -> AsyncIterator[Channel]:
    """A grpclib channel to the server, on a trio-asyncio loop of its own."""

    async def create() -> Channel:
        return Channel(address.host, address.port, config=config)

    async with trio_asyncio.open_loop():
        channel = await aio(create)()
        try:
            yield channel
        finally:
            channel.close()


class RawStream:
    """One StreamPipeline call on the wire: send requests, receive responses as-is."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.ended = False
        self.status_error: GRPCError | None = None
        self.reset: StreamTerminatedError | None = None

    async def send(self, request: spb.StreamRequest, *, end: bool = False) -> None:
        await aio(self.stream.send_message)(request, end=end)
        self.ended = self.ended or end

    async def end(self) -> None:
        await aio(self.stream.end)()
        self.ended = True

    async def recv(self) -> spb.StreamResponse | None:
        """The next response; None once the server ended the stream.

        Raises:
            GRPCError: The server ended the call with a non-OK status.
        """
        try:
            try:
                response: spb.StreamResponse | None = await aio(self.stream.recv_message)()
            except StreamTerminatedError as reset:
                # The server sent its status, then reset the stream our side still had
                # open; grpclib reports that status only at context exit: raise it now.
                self.stream._maybe_raise()
                self.reset = reset
                raise
        except GRPCError as error:
            self.status_error = error
            raise
        return response

    async def recv_all(self) -> list[spb.StreamResponse]:
        """Every response until the server ends the stream."""
        responses = []
        while (response := await self.recv()) is not None:
            responses.append(response)
        return responses

    async def open_session(self, request: spb.StreamRequest | None = None) -> spb.StreamReady:
        """Send ``init`` and wait for ``ready`` (skipping ``_status`` results)."""
        await self.send(init() if request is None else request)
        while True:
            response = await self.recv()
            assert response is not None, "the server ended the stream before ready"
            if kind(response) == "ready":
                return response.ready
            assert is_status(response), f"expected _status or ready, got {response}"

    async def finish(self) -> None:
        """End our side if still open and check the call ended with gRPC status OK.

        Raises:
            GRPCError: The call ended with another status.
        """
        if not self.ended:
            # Already reset by the server, or its connection closed (GOAWAY) after
            # the trailers: then there is nothing left to end.
            try:
                await self.end()
            except (StreamTerminatedError, H2ProtocolError):
                # grpclib reads trailers only once our side is ended; it is, by them.
                self.stream._end_done = True
        await aio(self.stream.recv_trailing_metadata)()


async def flood(
    stream: RawStream,
    size: int,
    sent: list[int] | None = None,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Open a session, then send ``size``-byte chunks and never read a response.

    Runs until flow control stops it for good (the caller cancels it) or the server
    ends the call; ``sent`` counts the chunks sent. Started (``nursery.start``) once
    the session is ready.
    """
    await stream.open_session()
    task_status.started()
    sequence = 0
    with contextlib.suppress(StreamTerminatedError):
        while True:
            await stream.send(chunk(binary_buffer(size), sequence))
            sequence += 1
            if sent is not None:
                sent.append(sequence)


async def recv_until_ended(stream: RawStream) -> BaseException | None:
    """Read (and drop) responses until the server ends the call; how it ended.

    Returns None for a normal end, else the GRPCError or StreamTerminatedError.
    """
    try:
        await stream.recv_all()
    except (GRPCError, StreamTerminatedError) as ended:
        return ended
    return None


@asynccontextmanager
async def open_raw_stream(
    channel: Channel, metadata: Mapping[str, str] | None = None
) -> AsyncIterator[RawStream]:
    """Open a StreamPipeline call (request headers sent) on ``channel``."""
    stub = streaming_grpc.StreamingPipelineServiceStub(channel)
    raw: RawStream | None = None
    failed: BaseException | None = None
    try:
        async with aio(stub.StreamPipeline.open(metadata=metadata)) as stream:
            await aio(stream.send_request)()
            raw = RawStream(stream)
            try:
                yield raw
            except BaseException as error:
                failed = error
                raise
    except (GRPCError, ProtocolError) as error:
        if failed is not None:
            raise failed from None  # the test's own failure, not grpclib's exit checks
        # Once the test has seen the call's status, grpclib's exit checks only repeat
        # it (or complain that our side of the finished call was never ended).
        seen = raw.status_error if raw is not None else None
        if seen is None and raw is not None and raw.reset is not None:
            return  # the server reset the call, and the test saw it
        if seen is None or (isinstance(error, GRPCError) and error.status != seen.status):
            raise


@asynccontextmanager
async def raw_stream(
    address: ServerAddress, metadata: Mapping[str, str] | None = None
) -> AsyncIterator[RawStream]:
    """A channel and one StreamPipeline call on it."""
    async with open_channel(address) as channel, open_raw_stream(channel, metadata) as stream:
        yield stream


# --------------------------------------------------------------------------- assertions


def live_session_tasks() -> list[str]:
    """Names of the Trio tasks of streaming sessions, anywhere in this Trio run."""
    found = []
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task.name.startswith("node:") or task.name.endswith(
            ("serve_stream", "_forward_results", "WebSocketCall.read", "WebSocketCall.write")
        ):
            found.append(task.name)
        pending += [child for nursery in task.child_nurseries for child in nursery.child_tasks]
    return found


async def wait_no_session_tasks(poll: float = 0.01) -> None:
    """Wait until no session task is left (bound it with fail_after)."""
    while True:
        if not live_session_tasks():
            return
        await trio.sleep(poll)


async def expect_stream_error(
    address: ServerAddress,
    requests: Sequence[spb.StreamRequest],
    error_type: int,
    *substrings: str,
) -> pb.ErrorResponse:
    """Send ``requests``; the call must end with one typed ``error``, then gRPC OK.

    Responses before the error (``_status``, ``ready``, results) are allowed; the
    error must be the last response. The server must still serve a new session
    afterwards.
    """
    async with raw_stream(address) as stream:
        for request in requests:
            try:
                await stream.send(request)
            except StreamTerminatedError:
                break  # the server already answered and ended the call
        responses = await stream.recv_all()
        assert responses, "the server ended the stream without an error response"
        last = responses[-1]
        assert kind(last) == "error", f"expected an error last, got {last}"
        assert [kind(r) for r in responses].count("error") == 1
        error = last.error
        assert error.error_type == error_type, (
            f"{pb.ErrorType.Name(error.error_type)} != {pb.ErrorType.Name(error_type)}: "
            f"{error.message}"
        )
        for substring in substrings:
            assert substring in error.message, f"{substring!r} not in {error.message!r}"
        await stream.finish()
    await wait_no_session_tasks()  # the session was cleaned up
    await assert_serves(address)
    return error


async def assert_serves(address: ServerAddress, metadata: Mapping[str, str] | None = None) -> None:
    """A fresh PassThrough session on ``address`` works end to end."""
    async with raw_stream(address, metadata) as stream:
        await stream.open_session()
        await stream.send(chunk(text_buffer("still alive"), 0))
        await stream.send(control(CLOSE), end=True)
        responses = await stream.recv_all()
        assert [kind(r) for r in responses] == ["result", "closed"], responses
        assert responses[0].result.data_outputs["pass"].text.text_data == b"still alive"
        await stream.finish()


def unwrap(error: BaseException) -> BaseException:
    """The one error inside nested single-error groups (trio-asyncio's loop adds them)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


async def grpc_error(call: Awaitable[Any]) -> GRPCError:
    """Await ``call`` (a Trio awaitable); it must fail with a GRPCError, which is returned."""
    with pytest.raises(GRPCError) as caught:
        await call
    return caught.value


# --------------------------------------------------------------------------- /metrics


async def http_get(host: str, port: int, path: str) -> tuple[int, str, str]:
    """A raw HTTP/1.0 GET: the status code, the header lines and the body."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = b""
        while chunk_ := await stream.receive_some(65536):
            data += chunk_
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, _, headers = head.decode().partition("\r\n")
    return int(status_line.split()[1]), headers, body.decode()


async def scrape(address: ServerAddress) -> str:
    """The server's Prometheus text (its metrics endpoint must be on)."""
    assert address.metrics_port is not None, "start the server with metrics_port=0"
    status, headers, body = await http_get(address.host, address.metrics_port, "/metrics")
    assert status == 200
    assert "content-type: text/plain" in headers.lower()
    return body


def sample(text: str, series: str) -> float | None:
    """The value of one series (``name{labels}`` exactly as rendered), or None."""
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == series:
            return float(value)
    return None


async def wait_for_sample(
    address: ServerAddress, series: str, value: float, *, poll: float = 0.02
) -> None:
    """Poll /metrics until ``series`` has ``value`` (bound it with fail_after)."""
    while True:
        if sample(await scrape(address), series) == value:
            return
        await trio.sleep(poll)


# --------------------------------------------------------------------------- WebSocket


@asynccontextmanager
async def open_websocket(
    address: ServerAddress,
    *,
    subprotocols: tuple[str, ...] = ("remotemedia.v1",),
    origin: str | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """A WebSocket to the server's browser edge (``/v1/stream``)."""
    headers = [] if origin is None else [(b"origin", origin.encode())]
    assert address.web_port is not None
    # Our own TCP stream, closed on the way out: trio-websocket's client waits for the
    # server's TCP close after a close handshake, and leaks its socket if the
    # connection is left before that arrives.
    stream = await trio.open_tcp_stream(address.host, address.web_port)
    try:
        async with stream, trio.open_nursery() as nursery:
            ws = await wrap_client_stream(
                nursery,
                stream,
                f"{address.host}:{address.web_port}",  # the Host header, as a browser sends
                "/v1/stream",
                subprotocols=list(subprotocols),
                extra_headers=headers,
            )
            try:
                yield ws
            finally:
                # A close handshake waits for the server: bounded, since a test may
                # leave a socket the server no longer reads (the TCP close follows).
                with trio.move_on_after(1.0):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:  # a refused handshake comes from the reader task
        refused, rest = group.split(ConnectionRejected)
        if refused is None or rest is not None:
            raise
        raise refused.exceptions[0] from None


async def websocket_send(ws: WebSocketConnection, request: spb.StreamRequest) -> None:
    """Send one request as one binary message."""
    await ws.send_message(request.SerializeToString())


async def websocket_responses(
    ws: WebSocketConnection,
) -> tuple[list[spb.StreamResponse], int | None]:
    """Every response until the server closes; and its close code."""
    responses = []
    try:
        while True:
            message = await ws.get_message()
            assert isinstance(message, bytes), message
            responses.append(spb.StreamResponse.FromString(message))
    except ConnectionClosed as closed:
        return responses, closed.reason.code


async def expect_websocket_error(
    address: ServerAddress,
    requests: Sequence[spb.StreamRequest],
    error_type: int,
    *substrings: str,
) -> pb.ErrorResponse:
    """:func:`expect_stream_error` over the browser edge's WebSocket (``web_port``).

    The same typed error, last and once; the socket then closes normally (an in-band
    error ends a session as it ends a gRPC call: with OK).
    """
    async with open_websocket(address) as ws:
        for request in requests:
            try:
                await websocket_send(ws, request)
            except ConnectionClosed:
                break  # the server already answered and closed
        responses, code = await websocket_responses(ws)
    assert responses, "the server closed the socket without an error response"
    assert [kind(r) for r in responses].count("error") == 1
    error = responses[-1].error
    assert kind(responses[-1]) == "error", responses[-1]
    assert error.error_type == error_type, error
    for substring in substrings:
        assert substring in error.message, f"{substring!r} not in {error.message!r}"
    assert code == 1000
    return error


async def expect_error_on_both_edges(
    address: ServerAddress,
    requests: Sequence[spb.StreamRequest],
    error_type: int,
    *substrings: str,
) -> pb.ErrorResponse:
    """The same typed error over gRPC and, if the server has one, over its WebSocket;
    the gRPC one."""
    error = await expect_stream_error(address, requests, error_type, *substrings)
    if address.web_port is not None:
        over_websocket = await expect_websocket_error(address, requests, error_type, *substrings)
        assert (over_websocket.message, over_websocket.context) == (error.message, error.context)
    return error
