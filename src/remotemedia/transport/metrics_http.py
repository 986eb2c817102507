"""A minimal HTTP endpoint serving Prometheus metrics at ``/metrics``, on Trio.

HTTP/1.0, one request per connection, ``GET /metrics`` only: enough for Prometheus
and curl, with no web framework.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial

import trio

__all__ = ["serve_metrics"]

_MAX_REQUEST = 8192
_READ_TIMEOUT = 5.0


async def _handle(render: Callable[[], str], stream: trio.SocketStream) -> None:
    async with stream:
        request = b""
        with trio.move_on_after(_READ_TIMEOUT):
            while b"\r\n\r\n" not in request and len(request) < _MAX_REQUEST:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                request += chunk
        line = request.split(b"\r\n", 1)[0].split()
        if (
            len(line) >= 2
            and line[0] in (b"GET", b"HEAD")
            and line[1].split(b"?")[0] == b"/metrics"
        ):
            body = render().encode()
            head = (
                "HTTP/1.0 200 OK\r\n"
                "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            payload = head + (body if line[0] == b"GET" else b"")
        else:
            body = b"Not found: metrics are at /metrics\n"
            payload = (
                b"HTTP/1.0 404 Not Found\r\nContent-Type: text/plain\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(payload)


async def serve_metrics(
    render: Callable[[], str],
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``render()`` at ``http://host:port/metrics`` until cancelled.

    Calls ``task_status.started(port)`` with the bound port once listening.
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(trio.serve_listeners, partial(_handle, render), listeners))
        task_status.started(bound)
