"""StreamPipeline over the browser edge's WebSocket, from a plain WebSocket client.

One binary message is one serialized StreamRequest (in) or StreamResponse (out), on
`/v1/stream` with the subprotocol `remotemedia.v1`: the same sessions, typed errors,
limits and drain as over gRPC, next to either gRPC transport.
"""

from __future__ import annotations

import contextlib

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, WebSocketConnection

from remotemedia.transport.serving import ServerAddress
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import streaming_pb2 as spb
from tests.e2e.conftest import (
    CLOSE,
    PASS,
    TIMEOUT,
    TOKEN,
    ServerFactory,
    binary_buffer,
    chunk,
    init,
    is_status,
    kind,
    manifest,
    open_websocket,
    text_buffer,
    wait_no_session_tasks,
    websocket_responses,
    websocket_send,
)
from tests.e2e.test_drain import Hold
from tests.e2e.test_drain import _registry as hold_registry

PROTOCOL = "remotemedia.v1"


async def _ready(ws: WebSocketConnection, request: spb.StreamRequest | None = None) -> None:
    await websocket_send(ws, init() if request is None else request)
    while True:
        response = spb.StreamResponse.FromString(await ws.get_message())
        if kind(response) == "ready":
            return
        assert is_status(response), response


async def test_a_session_over_the_websocket(start_server: ServerFactory) -> None:
    address = await start_server(web_port=0)
    with trio.fail_after(TIMEOUT):
        async with open_websocket(address) as ws:
            assert ws.subprotocol == PROTOCOL
            await _ready(ws, init(PASS))
            for sequence, text in enumerate(["a", "b", "c"]):
                await websocket_send(ws, chunk(text_buffer(text), sequence))
            await websocket_send(ws, spb.StreamRequest(control=spb.StreamControl(command=CLOSE)))
            responses, code = await websocket_responses(ws)
    results = [r.result for r in responses if kind(r) == "result" and not is_status(r)]
    assert [(r.sequence, r.data_outputs["pass"].text.text_data) for r in results] == [
        (0, b"a"),
        (1, b"b"),
        (2, b"c"),
    ]
    assert kind(responses[-1]) == "closed"
    assert code == 1000


async def test_a_token_comes_as_a_subprotocol(start_server: ServerFactory) -> None:
    address = await start_server(web_port=0, tokens=[TOKEN])
    with trio.fail_after(TIMEOUT):
        async with open_websocket(address, subprotocols=(PROTOCOL, f"bearer.{TOKEN}")) as ws:
            assert ws.subprotocol == PROTOCOL  # the token is never echoed back
            await _ready(ws)
        async with open_websocket(address, subprotocols=(PROTOCOL, "bearer.wrong")) as ws:
            responses, code = await websocket_responses(ws)
        async with open_websocket(address) as ws:
            missing, missing_code = await websocket_responses(ws)
    for answer, close in ((responses, code), (missing, missing_code)):
        (only,) = answer
        assert only.error.error_type == pb.ERROR_TYPE_AUTHENTICATION
        assert close == 1008


async def test_other_origins_are_refused_at_the_handshake(start_server: ServerFactory) -> None:
    address = await start_server(web_port=0, web_allowed_origins=["https://app.example.com"])
    own = f"http://{address.host}:{address.web_port}"
    with trio.fail_after(TIMEOUT):
        for origin in (own, "https://app.example.com"):
            async with open_websocket(address, origin=origin) as ws:
                await _ready(ws)
        with pytest.raises(ConnectionRejected) as refused:
            async with open_websocket(address, origin="https://evil.example.net"):
                pass
    assert refused.value.status_code == 403
    assert b"--web-allowed-origins" in (refused.value.body or b"")


async def test_a_client_must_offer_the_subprotocol(start_server: ServerFactory) -> None:
    address = await start_server(web_port=0)
    with trio.fail_after(TIMEOUT), pytest.raises(ConnectionRejected) as refused:
        async with open_websocket(address, subprotocols=()):
            pass
    assert refused.value.status_code == 400
    assert PROTOCOL.encode() in (refused.value.body or b"")


@pytest.mark.parametrize(
    ("message", "error_type", "code", "words"),
    [
        (b"\xff\xff\xff", pb.ERROR_TYPE_VALIDATION, 1007, "not a valid StreamRequest"),
        ("hello", pb.ERROR_TYPE_VALIDATION, 1007, "text message"),
        (b"\x0a" + b"\x80" * 9, pb.ERROR_TYPE_VALIDATION, 1007, "not a valid StreamRequest"),
    ],
)
async def test_bad_messages_get_a_typed_error_and_a_close_code(
    start_server: ServerFactory, message: bytes | str, error_type: int, code: int, words: str
) -> None:
    address = await start_server(web_port=0)
    with trio.fail_after(TIMEOUT):
        async with open_websocket(address) as ws:
            await _ready(ws)
            await ws.send_message(message)
            responses, close = await websocket_responses(ws)
    error = responses[-1].error
    assert (error.error_type, close) == (error_type, code)
    assert words in error.message


async def test_an_oversized_message_is_a_resource_limit(start_server: ServerFactory) -> None:
    address = await start_server(web_port=0, max_message_bytes=4096)
    with trio.fail_after(TIMEOUT):
        async with open_websocket(address) as ws:
            await _ready(ws)
            await websocket_send(ws, chunk(text_buffer("x" * 5000), 0))
            responses, close = await websocket_responses(ws)
    error = responses[-1].error
    assert (error.error_type, close) == (pb.ERROR_TYPE_RESOURCE_LIMIT, 1009)
    assert "4096-byte message limit" in error.message


async def test_a_bad_manifest_is_a_validation_error_naming_the_path(
    start_server: ServerFactory,
) -> None:
    address = await start_server(web_port=0)
    with trio.fail_after(TIMEOUT):
        async with open_websocket(address) as ws:
            await websocket_send(ws, init(manifest([("x", "NoSuchNode")])))
            responses, close = await websocket_responses(ws)
    error = responses[-1].error
    assert error.error_type == pb.ERROR_TYPE_VALIDATION
    assert "$.nodes[0].node_type" in error.message
    assert close == 1000  # an in-band error ends the session as over gRPC: normally


async def test_a_full_server_says_so_and_closes_try_again_later(
    start_server: ServerFactory,
) -> None:
    address = await start_server(web_port=0, max_sessions=1)
    with trio.fail_after(TIMEOUT):
        async with open_websocket(address) as first:
            await _ready(first)
            async with open_websocket(address) as second:
                await websocket_send(second, init())
                responses, close = await websocket_responses(second)
    error = responses[-1].error
    assert (error.error_type, close) == (pb.ERROR_TYPE_RESOURCE_LIMIT, 1013)
    assert "--max-sessions" in error.message


async def test_a_closed_tab_ends_its_session_at_once(start_server: ServerFactory) -> None:
    # Its node is busy for an hour: only cancelling the session ends it now.
    address = await start_server(web_port=0, registry=hold_registry())
    with trio.fail_after(TIMEOUT):
        async with open_websocket(address) as ws:
            await _ready(ws, init(manifest([("hold", "Hold", {"seconds": 3600})])))
            await websocket_send(ws, chunk(text_buffer("x"), 0, node_id="hold"))
            await Hold.working.wait()
        # The socket is closed (the tab is gone): nothing of its session is left, at
        # once (hypercorn would cancel the handler by itself only much later).
        with trio.fail_after(5):
            await wait_no_session_tasks()


async def test_a_drain_closes_websocket_sessions_with_the_reason(
    start_server: ServerFactory,
) -> None:
    shutdown = trio.Event()
    address = await start_server(web_port=0, shutdown=shutdown, drain_timeout=5.0)
    with trio.fail_after(TIMEOUT):
        async with open_websocket(address) as ws:
            await _ready(ws)
            shutdown.set()
            responses, close = await websocket_responses(ws)
    assert kind(responses[-1]) == "closed"
    assert responses[-1].closed.reason == "Server is shutting down"
    assert close == 1000


async def test_pages_and_the_stream_path_over_plain_http(start_server: ServerFactory) -> None:
    address = await start_server(web_port=0)
    with trio.fail_after(TIMEOUT):
        stream_path = await _get(address, "/v1/stream")
        missing = await _get(address, "/no/such/file.js")
        escaping = await _get(address, "/../pyproject.toml")
    assert stream_path.startswith(b"HTTP/1.1 426")
    assert missing.startswith(b"HTTP/1.1 404")
    assert escaping.startswith(b"HTTP/1.1 404")


async def _get(address: ServerAddress, path: str) -> bytes:
    assert address.web_port is not None
    async with await trio.open_tcp_stream(address.host, address.web_port) as stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: {address.host}:{address.web_port}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk_ := await stream.receive_some(65536):
            data += chunk_
    return data


async def test_compression_is_declined(start_server: ServerFactory) -> None:
    # Audio does not compress, and compressing costs CPU per message (and Node's
    # WebSocket fails on hypercorn's compressed frames).
    address = await start_server(web_port=0)
    assert address.web_port is not None
    request = (
        "GET /v1/stream HTTP/1.1\r\n"
        f"Host: {address.host}:{address.web_port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: remotemedia.v1\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    )
    with trio.fail_after(TIMEOUT):
        async with await trio.open_tcp_stream(address.host, address.web_port) as stream:
            await stream.send_all(request.encode())
            head = b""
            while b"\r\n\r\n" not in head:
                head += await stream.receive_some(4096)
    lines = head.split(b"\r\n\r\n")[0].decode().lower().splitlines()
    assert lines[0].startswith("http/1.1 101")
    assert "sec-websocket-protocol: remotemedia.v1" in lines
    assert not [line for line in lines if line.startswith("sec-websocket-extensions")]


async def test_a_browser_that_stops_reading_gives_up_its_slot(start_server: ServerFactory) -> None:
    # Back-pressured as a gRPC client is: the session's budget fills, the idle timeout
    # passes, the session ends and its slot is free again; the write the server was
    # waiting in gives up too, so nothing of the session is left while the stalled
    # client still holds its end of the connection.
    address = await start_server(web_port=0, max_sessions=1, idle_timeout=1.0)
    with trio.fail_after(TIMEOUT):
        async with open_websocket(address) as stalled, trio.open_nursery() as nursery:
            await _ready(stalled, init(PASS))

            async def flood() -> None:
                sequence = 0
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        await websocket_send(stalled, chunk(binary_buffer(64 * 1024), sequence))
                        sequence += 1

            nursery.start_soon(flood)
            while True:  # the only slot is taken until the server gives up on it
                async with open_websocket(address) as ws:
                    await websocket_send(ws, init(PASS))
                    first = spb.StreamResponse.FromString(await ws.get_message())
                    while is_status(first):
                        first = spb.StreamResponse.FromString(await ws.get_message())
                if kind(first) == "ready":
                    break  # admitted: the stalled session is gone
                assert first.error.error_type == pb.ERROR_TYPE_RESOURCE_LIMIT, first
                await trio.sleep(0.1)
            await wait_no_session_tasks()  # the stalled socket is still open here
            nursery.cancel_scope.cancel()
