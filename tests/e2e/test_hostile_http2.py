"""Rude HTTP/2 peers against both gRPC transports, frame by frame over a real socket.

What the rules of :mod:`remotemedia.transport.http2` promise: whatever a peer's
frames make the server's HTTP/2 layer report ends that connection at most, never
the server; malformed requests are refused before any handler runs; a rapid-reset
burst starts (almost) no calls and ends its connection; a stream over the limit is
refused alone; and the lines a peer causes are logged once, not once a frame.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
import trio
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from remotemedia.transport.http2 import MAX_CONCURRENT_STREAMS, RESET_BURST
from remotemedia.transport.messages import frame
from remotemedia.v1 import execution_pb2 as epb
from tests.e2e.conftest import TIMEOUT, ServerFactory, assert_serves, sample, scrape
from tests.e2e.raw_h2 import (
    GET_VERSION,
    HEALTH_WATCH,
    STREAMING,
    RawClient,
    frame_bytes,
    raw_client,
    request_headers,
)

VERSION_REQUEST = epb.VersionRequest(client_version="v1").SerializeToString()

DATA, HEADERS, PRIORITY, SETTINGS, PUSH_PROMISE, PING, ALTSVC = 0, 1, 2, 4, 5, 6, 0xA
ACK, END_HEADERS = 0x1, 0x4


# --------------------------------------------------------------------------- every event


def _open(client: h2.connection.H2Connection, path: str = GET_VERSION) -> int:
    stream_id: int = client.get_next_available_stream_id()
    client.send_headers(stream_id, request_headers(path))
    return stream_id


def _with_data(client: h2.connection.H2Connection, *, end: bool) -> int:
    stream_id = _open(client)
    client.send_data(stream_id, frame(VERSION_REQUEST), end_stream=end)
    return stream_id


def _trailers(client: h2.connection.H2Connection) -> None:
    stream_id = _with_data(client, end=False)
    client.send_headers(stream_id, [("x-checksum", "0")], end_stream=True)


def _reset(client: h2.connection.H2Connection) -> None:
    client.reset_stream(_open(client))


def _raw(data: bytes) -> Callable[[h2.connection.H2Connection], bytes]:
    return lambda client: data


_ALTSVC_PAYLOAD = len(b"localhost").to_bytes(2, "big") + b'localhostone="h2=:443"'

SCENARIOS: dict[str, Callable[[h2.connection.H2Connection], object]] = {
    # What a server's h2 reports:
    "RequestReceived": _open,
    "DataReceived": lambda client: _with_data(client, end=False),
    "StreamEnded": lambda client: _with_data(client, end=True),
    "TrailersReceived": _trailers,
    "StreamReset": _reset,
    "WindowUpdated": lambda client: client.increment_flow_control_window(4096),
    "RemoteSettingsChanged": lambda client: client.update_settings(
        {SettingCodes.MAX_FRAME_SIZE: 32768}
    ),
    "SettingsAcknowledged": _raw(frame_bytes(SETTINGS, ACK, 0)),
    "PingReceived": lambda client: client.ping(b"pingpong"),
    "PingAckReceived": _raw(frame_bytes(PING, ACK, 0, b"unasked!")),
    "PriorityUpdated": _raw(frame_bytes(PRIORITY, 0, 99, bytes([0, 0, 0, 0, 15]))),
    "ConnectionTerminated": lambda client: client.close_connection(),
    "UnknownFrameReceived": _raw(frame_bytes(0xFF, 0, 0)),
    # What only a client's h2 reports; a rude client sends the frames all the same:
    "AlternativeServiceAvailable": _raw(frame_bytes(ALTSVC, 0, 0, _ALTSVC_PAYLOAD)),
    # (HPACK: ":status: 200" from the static table; ":status: 103" literal, not indexed.)
    "ResponseReceived": _raw(frame_bytes(HEADERS, END_HEADERS, 1, b"\x88")),
    "InformationalResponseReceived": _raw(frame_bytes(HEADERS, END_HEADERS, 1, b"\x08\x03103")),
    "PushedStreamReceived": _raw(
        frame_bytes(PUSH_PROMISE, END_HEADERS, 1, (2).to_bytes(4, "big") + b"\x82")
    ),
}
CLIENT_ONLY = {
    "AlternativeServiceAvailable",
    "ResponseReceived",
    "InformationalResponseReceived",
    "PushedStreamReceived",
}
CLOSING = {"ConnectionTerminated"} | CLIENT_ONLY - {"AlternativeServiceAvailable"}
"""Scenarios after which the server may end the connection (the peer broke it)."""


def _client() -> h2.connection.H2Connection:
    return h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False
        )
    )


def _scenario_bytes(client: h2.connection.H2Connection, name: str) -> bytes:
    extra = SCENARIOS[name](client)
    return client.data_to_send() + (extra if isinstance(extra, bytes) else b"")


def test_the_scenarios_cover_every_event_h2_has() -> None:
    events = {
        name
        for name, value in vars(h2.events).items()
        if isinstance(value, type)
        and issubclass(value, h2.events.Event)
        and value is not h2.events.Event
        and not name.startswith("_")
    }
    assert set(SCENARIOS) == events


@pytest.mark.parametrize("name", sorted(set(SCENARIOS) - CLIENT_ONLY))
def test_each_scenario_makes_a_server_report_its_event(name: str) -> None:
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()  # (its SETTINGS are what a SETTINGS ACK acknowledges)
    client = _client()
    client.initiate_connection()
    preface = client.data_to_send()
    server.receive_data(preface)
    reported = server.receive_data(_scenario_bytes(client, name))
    assert name in {type(event).__name__ for event in reported}


async def _get_version(client: RawClient) -> dict[str, str]:
    """A GetVersion call on ``client``'s connection; the headers that end it."""
    stream_id = client.send_headers(request_headers(GET_VERSION))
    client.message(stream_id, VERSION_REQUEST, end=True)
    await client.flush()
    return await client.ended(stream_id)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_no_frame_a_peer_sends_takes_the_server_down(
    start_server: ServerFactory, name: str
) -> None:
    address = await start_server()
    with trio.fail_after(TIMEOUT):
        async with raw_client(address, validate=False) as client:
            await client.socket.send_all(_scenario_bytes(client.h2, name))
            if name in CLOSING:
                # The peer broke the connection (or ended it): the server may close it.
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    await client.read_to_end()
            else:
                # Anything else leaves the connection serving.
                assert (await _get_version(client))["grpc-status"] == "0"
        await assert_serves(address)


# --------------------------------------------------------------------------- malformed requests

MALFORMED = {
    "duplicated :path": [*request_headers(GET_VERSION), (":path", GET_VERSION)],
    "uppercase name": [*request_headers(GET_VERSION), ("X-Upper", "1")],
    "unknown pseudo-header": [(":nope", "1"), *request_headers(GET_VERSION)],
    "connection header": [*request_headers(GET_VERSION), ("connection", "keep-alive")],
    "te other than trailers": [
        *[(n, v) for n, v in request_headers(GET_VERSION) if n != "te"],
        ("te", "gzip"),
    ],
    "missing :method": [(n, v) for n, v in request_headers(GET_VERSION) if n != ":method"],
    "missing :scheme": [(n, v) for n, v in request_headers(GET_VERSION) if n != ":scheme"],
    "missing :path": [(n, v) for n, v in request_headers(GET_VERSION) if n != ":path"],
    "empty :path": [(n, "" if n == ":path" else v) for n, v in request_headers(GET_VERSION)],
    "pseudo-header after a header": [
        *[(n, v) for n, v in request_headers(GET_VERSION) if n != ":authority"],
        (":authority", "localhost"),
    ],
    "response pseudo-header": [*request_headers(GET_VERSION)[:1], (":status", "200")],
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_a_malformed_request_is_refused_before_any_handler_runs(
    start_server: ServerFactory, case: str
) -> None:
    address = await start_server()
    with trio.fail_after(TIMEOUT):
        async with raw_client(address, validate=False) as client:
            stream_id = client.send_headers(MALFORMED[case])
            client.message(stream_id, VERSION_REQUEST, end=True)
            await client.flush()
            with contextlib.suppress(h2.exceptions.ProtocolError):
                while not client.closed and not any(
                    isinstance(event, h2.events.StreamReset) for event in client.events
                ):
                    await client.read()
        answers = [e for e in client.events if isinstance(e, h2.events.ResponseReceived)]
        assert not answers, f"the server answered a request with a {case}: {answers}"
        refusals = [
            event.error_code
            for event in client.events
            if isinstance(event, h2.events.ConnectionTerminated | h2.events.StreamReset)
        ]
        assert ErrorCodes.PROTOCOL_ERROR in refusals, refusals
        await assert_serves(address)


# --------------------------------------------------------------------------- rapid reset

BURST = 7_000
"""HEADERS + RST_STREAM pairs in one write (about 200 KiB): the probe's burst."""


def _started_calls(metrics: str) -> float:
    return sum(
        sample(metrics, f'remotemedia_grpc_requests_total{{method="StreamPipeline",status="{s}"}}')
        or 0.0
        for s in ("success", "error")
    )


async def test_a_rapid_reset_burst_starts_almost_no_calls_and_ends_its_connection(
    start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    address = await start_server(metrics_port=0)
    with (
        trio.fail_after(TIMEOUT),
        caplog.at_level(logging.INFO, "remotemedia.transport"),
    ):
        async with raw_client(address) as client:
            await client.until(h2.events.RemoteSettingsChanged)
            for _ in range(BURST):
                client.h2.reset_stream(client.request(STREAMING))
            with contextlib.suppress(trio.BrokenResourceError):
                await client.flush()
            goaway = await client.until(h2.events.ConnectionTerminated, answer=None)
            assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
        # Calls start only for pairs a read split apart, not one per stream.
        assert _started_calls(await scrape(address)) < RESET_BURST / 10
        await assert_serves(address)
    lines = [r for r in caplog.records if "reset streams" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in lines]


# --------------------------------------------------------------------------- too many streams


async def _settled(client: RawClient) -> None:
    """Read until the server's stream limit is in force (its SETTINGS acknowledged)."""
    while client.h2.remote_settings.max_concurrent_streams != MAX_CONCURRENT_STREAMS:
        await client.read()


async def test_a_stream_over_the_limit_is_refused_and_the_others_go_on(
    start_server: ServerFactory,
) -> None:
    address = await start_server()
    with trio.fail_after(TIMEOUT):
        async with raw_client(address, unlimited=True) as client:
            await _settled(client)
            watches = []
            for _ in range(MAX_CONCURRENT_STREAMS):
                watches.append(client.request(HEALTH_WATCH))
                client.message(watches[-1], b"")
            over = client.request(HEALTH_WATCH)
            client.message(over, b"")
            await client.flush()
            reset = await client.until(h2.events.StreamReset)
            assert (reset.stream_id, reset.error_code) == (over, ErrorCodes.REFUSED_STREAM)
            # The connection goes on: a stream ends, and a new one is served.
            client.h2.reset_stream(watches[0])
            await client.flush()
            assert (await _get_version(client))["grpc-status"] == "0"
            assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in client.events)
