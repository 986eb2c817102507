"""An HTTP/2 client that sends exactly what a test says, over a real socket.

Built on ``h2`` like the servers, but without its manners where a test needs a rude
peer: ``validate=False`` sends malformed headers as they are, and ``unlimited=True``
opens streams past the server's MAX_CONCURRENT_STREAMS. :func:`frame_bytes` builds
frames ``h2`` would never send (extension types, ALTSVC, unsolicited ACKs).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import h2.config
import h2.connection
import h2.events
import trio
from grpclib.health.v1.health_pb2 import HealthCheckRequest

from remotemedia.transport.messages import frame
from remotemedia.transport.serving import ServerAddress

STREAMING = "/remotemedia.v1.StreamingPipelineService/StreamPipeline"
GET_VERSION = "/remotemedia.v1.PipelineExecutionService/GetVersion"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"

Headers = Sequence[tuple[str, str]]


def request_headers(path: str, extra: Headers = ()) -> list[tuple[str, str]]:
    """A well-formed gRPC request's headers for ``path``, then ``extra``."""
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *extra,
    ]


def frame_bytes(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame as it goes on the wire (RFC 9113 §4.1)."""
    return (
        len(payload).to_bytes(3, "big")
        + bytes([kind, flags])
        + stream_id.to_bytes(4, "big")
        + payload
    )


class _UnlimitedClient(h2.connection.H2Connection):
    """A client ``h2`` that opens streams whatever the server's limit says."""

    @property
    def open_outbound_streams(self) -> int:
        return 0


class RawClient:
    """Sends what a test says; records the events that come back."""

    def __init__(
        self, socket: trio.SocketStream, *, validate: bool = True, unlimited: bool = False
    ) -> None:
        self.socket = socket
        connection_class = _UnlimitedClient if unlimited else h2.connection.H2Connection
        self.h2 = connection_class(
            h2.config.H2Configuration(
                client_side=True,
                header_encoding="utf-8",
                validate_outbound_headers=validate,
                normalize_outbound_headers=validate,
            )
        )
        self.events: list[h2.events.Event] = []
        self.closed = False

    async def flush(self) -> None:
        data = self.h2.data_to_send()
        if data:
            await self.socket.send_all(data)

    def request(self, path: str, *, headers: dict[str, str] | None = None) -> int:
        """Open a stream with a gRPC request's headers (plus ``headers``); its id."""
        return self.send_headers(request_headers(path, tuple((headers or {}).items())))

    def send_headers(self, headers: Headers, *, end: bool = False) -> int:
        """Open a stream with exactly ``headers``; its id."""
        stream_id = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream_id, list(headers), end_stream=end)
        return stream_id

    async def watch(self, service: str = "") -> int:
        """Start a health Watch of ``service``; its stream id."""
        stream_id = self.request(HEALTH_WATCH)
        self.message(stream_id, HealthCheckRequest(service=service).SerializeToString())
        await self.flush()
        return stream_id

    def message(self, stream_id: int, data: bytes, *, end: bool = False) -> None:
        self.h2.send_data(stream_id, frame(data), end_stream=end)

    async def read(self, *, answer: bool | None = True) -> list[h2.events.Event]:
        """One read's events, answering pings and settings if ``answer`` (if None: a
        sending task will; if False: never)."""
        try:
            data = await self.socket.receive_some(65536)
        except trio.BrokenResourceError:  # reset by the server: closed all the same
            data = b""
        if not data:
            self.closed = True
            return []
        events = self.h2.receive_data(data)
        self.events.extend(events)
        if answer:
            await self.flush()
        elif answer is False:
            self.h2.data_to_send()  # dropped: the peer never hears from us
        return events

    async def until(
        self, kind: type[h2.events.Event], *, answer: bool | None = True
    ) -> h2.events.Event:
        while True:
            for event in await self.read(answer=answer):
                if isinstance(event, kind):
                    return event
            if self.closed:
                raise AssertionError(f"the connection closed before {kind.__name__}")

    async def ended(self, stream_id: int) -> dict[str, str]:
        """The trailers (or trailers-only headers) that end ``stream_id``."""
        while True:
            for event in self.events:
                if (
                    isinstance(event, h2.events.TrailersReceived | h2.events.ResponseReceived)
                    and event.stream_id == stream_id
                    and any(name == "grpc-status" for name, _ in event.headers)
                ):
                    return dict(event.headers)
            await self.read()
            if self.closed:
                raise AssertionError("the connection closed before the call ended")

    async def read_to_end(self) -> None:
        """Read (answering) until the server closes the connection."""
        while not self.closed:
            await self.read()


@asynccontextmanager
async def raw_client(
    address: ServerAddress, *, validate: bool = True, unlimited: bool = False
) -> AsyncIterator[RawClient]:
    """A connected :class:`RawClient` that has sent its preface and SETTINGS."""
    socket = await trio.open_tcp_stream(address.host, address.port)
    async with socket:
        client = RawClient(socket, validate=validate, unlimited=unlimited)
        client.h2.initiate_connection()
        await client.flush()
        yield client
