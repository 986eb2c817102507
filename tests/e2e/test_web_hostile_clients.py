"""The browser edge against clients that send what no page would: odd paths, other hosts.

Raw HTTP/1.1 over a real socket, so each request carries exactly the path, ``Host``
and ``Origin`` a hostile client (or a DNS-rebinding page) would send.
"""

from __future__ import annotations

import logging

import pytest
import trio

from remotemedia.transport.serving import ServerAddress
from tests.e2e.conftest import TIMEOUT, ServerFactory

LONG = "a" * 300


async def _request(address: ServerAddress, head: str) -> tuple[int, bytes]:
    """Send one request head (``Connection: close``); the status and the whole reply."""
    assert address.web_port is not None
    async with await trio.open_tcp_stream(address.host, address.web_port) as stream:
        await stream.send_all(head.encode("latin-1"))
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
            if data.startswith(b"HTTP/1.1 101"):
                break  # upgraded: the socket stays open for WebSocket frames
    return int(data.split(b" ", 2)[1]), data


async def _get(address: ServerAddress, path: str, host: str | None = None) -> tuple[int, bytes]:
    host = f"{address.host}:{address.web_port}" if host is None else host
    return await _request(
        address, f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )


async def _upgrade(
    address: ServerAddress, host: str, origin: str | None = None
) -> tuple[int, bytes]:
    """A WebSocket handshake on /v1/stream with this ``Host`` (and ``Origin``)."""
    origin_line = "" if origin is None else f"Origin: {origin}\r\n"
    return await _request(
        address,
        "GET /v1/stream HTTP/1.1\r\n"
        f"Host: {host}\r\n{origin_line}"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: remotemedia.v1\r\n\r\n",
    )


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# ------------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(f"/{LONG}", id="long"),
        pytest.param(f"/{LONG}.js", id="long-asset"),
        pytest.param(f"/examples/{LONG}.json", id="long-example"),
        pytest.param(f"/{'b' * 5000}", id="very-long"),
        pytest.param(f"/{LONG}/{LONG}", id="long-folders"),
        pytest.param("/%00", id="nul"),
        pytest.param("/index.html%00.js", id="nul-inside"),
        pytest.param("/examples/%00.json", id="nul-example"),
        pytest.param("/%ff%fe.js", id="not-utf8"),
        pytest.param("/examples/%ff.json", id="not-utf8-example"),
    ],
)
async def test_a_path_that_names_no_served_file_is_a_plain_404(
    start_server: ServerFactory, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    caplog.set_level(logging.INFO)
    address = await start_server(web_port=0)
    with trio.fail_after(TIMEOUT):
        status, _ = await _get(address, path)
        page, _ = await _get(address, "/")  # and the server still serves
    assert status == 404
    assert page == 200
    assert not _errors(caplog)


async def test_traversal_stays_a_404(start_server: ServerFactory) -> None:
    address = await start_server(web_port=0)
    with trio.fail_after(TIMEOUT):
        for path in ("/../pyproject.toml", "/%2e%2e/pyproject.toml", "/examples/../vad.json"):
            status, _ = await _get(address, path)
            assert status == 404, path
        served, body = await _get(address, "/examples/vad.json")
    assert served == 200
    assert b'"nodes"' in body


# ------------------------------------------------------------------------------- hosts


async def test_a_rebinding_host_is_refused_even_with_its_own_origin(
    start_server: ServerFactory,
) -> None:
    address = await start_server(web_port=0)
    evil = f"evil.example:{address.web_port}"
    with trio.fail_after(TIMEOUT):
        upgrade, refusal = await _upgrade(address, evil, origin=f"http://{evil}")
        page, page_refusal = await _get(address, "/", host=evil)
    assert upgrade == 403
    assert b"--web-allowed-hosts" in refusal
    assert page == 403
    assert b"--web-allowed-hosts" in page_refusal


async def test_a_listed_host_is_accepted(start_server: ServerFactory) -> None:
    address = await start_server(web_port=0, web_allowed_hosts=["evil.example", ".corp.example"])
    port = address.web_port
    with trio.fail_after(TIMEOUT):
        for host in (f"evil.example:{port}", f"EVIL.example.:{port}", f"media.corp.example:{port}"):
            status, _ = await _upgrade(address, host, origin=f"http://{host}")
            assert status == 101, host
        other, _ = await _upgrade(address, f"other.example:{port}")
    assert other == 403


async def test_a_star_accepts_any_host(start_server: ServerFactory) -> None:
    address = await start_server(web_port=0, web_allowed_hosts=["*"])
    with trio.fail_after(TIMEOUT):
        status, _ = await _upgrade(address, "anything.example")
    assert status == 101


@pytest.mark.parametrize(
    "host",
    [
        "localhost:{port}",
        "LocalHost",
        "app.localhost:{port}",
        "127.0.0.1:{port}",
        "[::1]:{port}",
        "10.1.2.3",
        "[fe80::1]:{port}",
    ],
)
async def test_loopback_names_and_ip_literals_are_accepted(
    start_server: ServerFactory, host: str
) -> None:
    address = await start_server(web_port=0)
    host = host.format(port=address.web_port)
    with trio.fail_after(TIMEOUT):
        upgrade, _ = await _upgrade(address, host, origin=f"http://{host}")
        page, _ = await _get(address, "/", host=host)
    assert (upgrade, page) == (101, 200)


async def test_refused_hosts_cannot_flood_the_log(
    start_server: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    address = await start_server(web_port=0)
    with trio.fail_after(TIMEOUT):
        for number in range(30):
            status, _ = await _get(address, "/", host=f"evil{number}.example")
            assert status == 403
    refusals = [r for r in caplog.records if "--web-allowed-hosts" in r.getMessage()]
    assert len(refusals) == 1
    assert refusals[0].levelno == logging.INFO
