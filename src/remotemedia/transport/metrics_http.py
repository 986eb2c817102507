"""A minimal HTTP endpoint: Prometheus metrics at ``/metrics``, live sessions as JSON.

HTTP/1.0, one request per connection, ``GET`` (or ``HEAD``) of ``/metrics`` and
``/v1/sessions`` (what ``remotemedia top`` reads, see
:mod:`remotemedia.service.live`): enough for Prometheus, curl and ``top``, with no
web framework.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from functools import partial

import trio

__all__ = ["SESSIONS_PATH", "serve_metrics"]

SESSIONS_PATH = b"/v1/sessions"
"""Where the live sessions are (JSON)."""
_METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_JSON_TYPE = "application/json"

_MAX_REQUEST = 8192
_READ_TIMEOUT = 5.0


Routes = dict[bytes, tuple[str, Callable[[], str]]]


async def _handle(routes: Routes, stream: trio.SocketStream) -> None:
    async with stream:
        request = b""
        with trio.move_on_after(_READ_TIMEOUT):
            while b"\r\n\r\n" not in request and len(request) < _MAX_REQUEST:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                request += chunk
        line = request.split(b"\r\n", 1)[0].split()
        route = routes.get(line[1].split(b"?")[0]) if len(line) >= 2 else None
        if route is not None and line[0] in (b"GET", b"HEAD"):
            content_type, render = route
            body = render().encode()
            head = (
                "HTTP/1.0 200 OK\r\n"
                f"Content-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            ).encode()
            payload = head + (body if line[0] == b"GET" else b"")
        else:
            body = b"Not found: metrics are at /metrics, live sessions at /v1/sessions\n"
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
    sessions: Callable[[], str] | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``render()`` at ``http://host:port/metrics`` until cancelled.

    With ``sessions``, its JSON is served at ``/v1/sessions`` too. Calls
    ``task_status.started(port)`` with the bound port once listening.
    """
    routes: Routes = {b"/metrics": (_METRICS_TYPE, render)}
    if sessions is not None:
        routes[SESSIONS_PATH] = (_JSON_TYPE, sessions)
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(trio.serve_listeners, partial(_handle, routes), listeners))
        task_status.started(bound)
