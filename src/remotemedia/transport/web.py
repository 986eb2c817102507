"""The browser edge: the page, its assets, and StreamPipeline over a WebSocket.

``remotemedia serve --web-port PORT`` serves, in the same Trio process as gRPC:

- ``GET /`` and ``GET /<asset>``: the bundled page and its files (no CDN);
- ``GET /examples/<name>.json``: a bundled pipeline's manifest;
- ``GET /v1/stream``, upgraded to a WebSocket with the subprotocol ``remotemedia.v1``.

The WebSocket carries the gRPC call's messages, one per binary message: the client
sends serialized ``StreamRequest``s, the server answers serialized
``StreamResponse``s, with the same service function behind it as gRPC
(:func:`~remotemedia.service.streaming.serve_stream`), so the same semantics, limits,
typed errors, metrics and drain. What gRPC says with a status (a malformed message,
auth refused, the server full or draining) comes as a typed ``error`` response and
then a close code (:func:`~remotemedia.service.status.websocket_close_code`).

Rules:

1. Auth: browsers cannot set headers on a WebSocket, so the token comes as a second
   subprotocol ``bearer.<token>`` (or the ``Authorization`` header, for other
   clients); never in the URL.
2. ``Origin`` must be the page's own origin or one of ``--web-allowed-origins``;
   anything else is refused at the handshake (403): another site's page must not
   drive a user's microphone session.
3. ``Host`` must be a name this server answers to, on every request (page, files,
   WebSocket), else 403: an IP address, ``localhost`` or ``*.localhost``, this
   machine's host name, or one of ``--web-allowed-hosts``. A DNS-rebinding page
   points its own name at this server and so controls both ``Host`` and ``Origin``
   (rule 2 alone lets it in); its name is in neither list. IP literals are fine:
   rebinding needs a DNS name. A request without ``Host`` (HTTP/1.0) is no browser's
   and is served. The refusal's log line is throttled (a client can send many).
4. A path names a served file only through the folder's own listing: a name too
   long for the file system, with a NUL or an odd byte, or with ``..`` is a 404, never
   an ``OSError``.
5. A browser that stops reading is back-pressured like a slow gRPC client (the
   session's byte budget, then the idle timeout); a closed tab ends its session at
   once.

HTTP/1.1 and WebSocket framing are hypercorn's (its Trio worker, ASGI), patched
when the edge starts, never at import
(:mod:`~remotemedia.transport.hypercorn_internals`): no permessage-deflate, and a
write gives up on a client that reads nothing for the idle timeout.
"""

from __future__ import annotations

import functools
import json
import logging
import mimetypes
import socket
from collections.abc import Sequence
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, cast

import attrs
import trio
import yaml
from hypercorn.trio import serve as hypercorn_serve

from remotemedia.config import AuthConfig, ConfigError, ServerConfig
from remotemedia.errors import (
    AuthenticationError,
    InvalidRequestError,
    ResourceLimitError,
)
from remotemedia.examples import example_names, example_path
from remotemedia.log_throttle import LogThrottle
from remotemedia.service.auth import check_authorization
from remotemedia.service.calls import LiveCalls, observed
from remotemedia.service.context import ServiceContext
from remotemedia.service.identity import SERVER_HEADER
from remotemedia.service.wire import CallOrigin
from remotemedia.transport import hypercorn_internals
from remotemedia.transport.web_call import Receive, Send, WebSocketCall, fail
from remotemedia.transport.web_hosts import HostNames
from remotemedia.transport.webrtc_offer import (
    MAX_OFFER_BYTES,
    Answerer,
    parse_offer,
    refusal_of,
)

__all__ = ["PROTOCOL", "STREAM_PATH", "WebApp", "start_web"]


logger = logging.getLogger(__name__)

PROTOCOL = "remotemedia.v1"
"""The WebSocket subprotocol a client must offer."""
BEARER = "bearer."
"""Prefix of the subprotocol that carries a token."""
STREAM_PATH = "/v1/stream"
WEBRTC_PATH = "/v1/webrtc"
"""``GET``: whether WebRTC is on, and the ICE servers a browser's peer should use."""
OFFER_PATH = "/v1/webrtc/offer"
"""``POST``: an SDP offer and the session's init; answered with the SDP answer."""

Scope = dict[str, Any]


def _shown(text: str | None, limit: int = 100) -> str:
    """A client's text, quoted and cut, safe to put in a log line or a reply."""
    text = text or ""
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


class WebApp:
    """The ASGI application: static files and the WebSocket stream.

    Args:
        context: What every call shares (the same one as the gRPC server's).
        auth: Who may stream.
        allowed_origins: Origins besides the page's own whose pages may connect
            (``scheme://host[:port]``); ``*`` allows any.
        allowed_hosts: Host names besides IP addresses, localhost and this machine's
            name that requests may be for (rule 3); ``.example.com`` allows it and its
            subdomains, ``*`` any.
        static: The package folder with the page and its assets.
        webrtc: The WebRTC edge, which answers offers; None: WebRTC is off.
    """

    def __init__(
        self,
        context: ServiceContext,
        auth: AuthConfig,
        allowed_origins: Sequence[str] = (),
        allowed_hosts: Sequence[str] = (),
        static: str = "web",
        webrtc: Answerer | None = None,
    ) -> None:
        self.context = context
        self.webrtc = webrtc
        self.auth = auth
        self.allowed_origins = frozenset(allowed_origins)
        # The machine's own name: set by its operator, not by a web page. Not its
        # FQDN: socket.getfqdn() may wait on DNS.
        self.hosts = HostNames.of(allowed_hosts, socket.gethostname())
        self.static = resources.files("remotemedia") / static
        self.client_log = LogThrottle(logger)
        self.calls = LiveCalls()  # calls not finished, either kind (counted for the drain)

    @property
    def live(self) -> int:
        """WebSocket and WebRTC calls not finished."""
        return self.calls.live

    async def wait_idle(self) -> None:
        """Wait until no WebSocket or WebRTC call is live."""
        await self.calls.wait_idle()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope (lifespan, a page request, a WebSocket)."""
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "http":
            if self._host_allowed(scope):
                await self._http(scope, receive, send)
            else:
                await _plain(send, 403, self._host_refusal(scope))

    def _host_allowed(self, scope: Scope) -> bool:
        return self.hosts.allows(_headers(scope).get("host"))

    def _host_refusal(self, scope: Scope) -> str:
        host = _shown(_headers(scope).get("host"))
        self.client_log.info(
            "Refused a request for host %s: not an IP address, localhost or this machine's "
            "name; if it is this server's, add it to --web-allowed-hosts.",
            host,
        )
        return f"This server does not answer to host {host} (--web-allowed-hosts)."

    # ------------------------------------------------------------------------ pages

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path in (WEBRTC_PATH, OFFER_PATH):
            await self._webrtc(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _plain(send, 405, "Only GET and HEAD are served here.")
            return
        if path == STREAM_PATH:
            await _plain(send, 426, f"{STREAM_PATH} is a WebSocket (subprotocol {PROTOCOL}).")
            return
        if path.startswith("/examples/") and path.endswith(".json"):
            await self._example(path[len("/examples/") : -len(".json")], send)
            return
        name = "index.html" if path == "/" else path.lstrip("/")
        if not name or any(part in ("", ".", "..") for part in name.split("/")):
            await _plain(send, 404, "Not found.")
            return
        asset = _served_file(self.static, name)
        if asset is None:
            await _plain(send, 404, f"No such file: {_shown(path)}")
            return
        body = asset.read_bytes()
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind in ("application/javascript", "text/javascript"):
            kind += "; charset=utf-8"
        headers = [
            (b"content-type", kind.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-cache"),
            (b"x-content-type-options", b"nosniff"),
            (SERVER_HEADER.encode(), self.context.server_id.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    async def _example(self, name: str, send: Send) -> None:
        """A bundled pipeline's manifest as JSON (what the page and the JS client use)."""
        known = example_names()
        # Only a listed name reaches the file system (rule 4).
        path = example_path(name) if name in known else None
        if path is None:
            names = ", ".join(known)
            await _plain(
                send, 404, f"No bundled pipeline named {_shown(name)} (there are: {names})."
            )
            return
        document = yaml.safe_load(path.read_text())
        body = json.dumps(document).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-cache"),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    # ----------------------------------------------------------------------- WebRTC

    async def _webrtc(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``GET /v1/webrtc`` (is it on, and with which ICE servers) and the offers."""
        method, path = scope["method"], scope["path"]
        expected = "POST" if path == OFFER_PATH else "GET"
        if method != expected:
            await _plain(send, 405, f"{path} takes {expected}.")
            return
        if self.webrtc is None:
            await _plain(
                send, 404, "WebRTC is off on this server (serve --webrtc; remotemedia[webrtc])."
            )
            return
        if not self._origin_allowed(scope):
            self.client_log.info(
                "Refused a WebRTC offer from origin %s (--web-allowed-origins).",
                _shown(_headers(scope).get("origin")),
            )
            refused = AuthenticationError(
                "This origin may not open sessions here (--web-allowed-origins)."
            )
            await _json(send, 403, refusal_of(refused)[1])
            return
        try:
            check_authorization(_headers(scope).get("authorization"), self.auth)
        except AuthenticationError as error:
            await _json(send, *refusal_of(error))
            return
        if path == WEBRTC_PATH:
            await _json(send, 200, self.webrtc.description())
            return
        limit = MAX_OFFER_BYTES + self.context.limits.max_message_bytes * 4 // 3
        body = await _body(receive, limit)
        if body is None:
            too_big = ResourceLimitError(f"An offer is at most {limit} bytes; this one is larger.")
            await _json(send, *refusal_of(too_big))
            return
        try:
            offer = parse_offer(body)
        except InvalidRequestError as error:
            await _json(send, *refusal_of(error))
            return
        if offer.traceparent is None and "traceparent" in _headers(scope):
            offer = attrs.evolve(offer, traceparent=_headers(scope)["traceparent"])
        await _json(send, *await self.webrtc.answer(offer))

    # -------------------------------------------------------------------- the stream

    def _origin_allowed(self, scope: Scope) -> bool:
        headers = _headers(scope)
        origin = headers.get("origin")
        if origin is None:
            return True  # not a browser: no page to protect the user from
        if "*" in self.allowed_origins or origin in self.allowed_origins:
            return True
        host = headers.get("host", "")
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        return origin == f"{scheme}://{host}"

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        if not self._host_allowed(scope):
            await _deny(send, 403, self._host_refusal(scope))
            return
        if scope["path"] != STREAM_PATH:
            await send({"type": "websocket.close", "code": 1008})  # refuses the handshake
            return
        if not self._origin_allowed(scope):
            self.client_log.info(
                "Refused a WebSocket from origin %s (--web-allowed-origins).",
                _shown(_headers(scope).get("origin")),
            )
            await _deny(
                send, 403, "This origin may not open sessions here (--web-allowed-origins)."
            )
            return
        offered = [p.strip() for p in scope.get("subprotocols", [])]
        if PROTOCOL not in offered:
            await _deny(send, 400, f"Offer the WebSocket subprotocol {PROTOCOL!r}.")
            return
        headers = [(SERVER_HEADER.encode(), self.context.server_id.encode())]
        await send({"type": "websocket.accept", "subprotocol": PROTOCOL, "headers": headers})
        async with self.calls.counting():
            await self._serve(scope, offered, receive, send)

    async def _serve(self, scope: Scope, offered: list[str], receive: Receive, send: Send) -> None:
        with observed(self.context.metrics, "StreamPipeline") as outcome:
            try:
                token = next((p[len(BEARER) :] for p in offered if p.startswith(BEARER)), None)
                header = _headers(scope).get("authorization")
                check_authorization(f"Bearer {token}" if token else header, self.auth)
            except AuthenticationError as error:
                await fail(send, error)
            else:
                origin = CallOrigin("websocket")
                origin.take_traceparent(_headers(scope).get("traceparent"))
                call = WebSocketCall(self.context, receive, send, origin)
                outcome.success = await call.run()


def _served_file(folder: Traversable, name: str) -> Traversable | None:
    """The file ``name`` (``a/b.js``) names under ``folder``, or None.

    Each part is looked up among its folder's entries, never handed to the file
    system as the client wrote it: a part too long for it, or with a NUL, then names
    nothing (a 404) instead of raising.
    """
    entry = folder
    for part in name.split("/"):
        if not entry.is_dir():
            return None
        found = next((child for child in entry.iterdir() if child.name == part), None)
        if found is None:
            return None
        entry = found
    return entry if entry.is_file() else None


async def _deny(send: Send, status: int, text: str) -> None:
    """Refuse the handshake with an HTTP response (hypercorn's denial extension)."""
    await send(
        {
            "type": "websocket.http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "websocket.http.response.body", "body": text.encode()})


async def _body(receive: Receive, limit: int) -> bytes | None:
    """A request's body, or None if it is longer than ``limit``."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b""  # the client went away: an empty body, refused as not JSON
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            return None
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


async def _json(send: Send, status: int, body: bytes) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _headers(scope: Scope) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
    }


async def start_web(
    nursery: trio.Nursery, config: ServerConfig, context: ServiceContext, stop: trio.Event
) -> tuple[WebApp | None, int | None]:
    """Start the browser edge in ``nursery`` if ``config.web_port`` asks for it.

    It serves until ``stop`` is set (after the drain, so its sessions have said
    ``closed``). Returns the app (whose live calls the drain waits for) and the
    bound port, or (None, None).
    """
    if config.web_port is None:
        return None, None
    hypercorn_internals.apply()
    app = WebApp(context, config.auth, config.web_allowed_origins, config.web_allowed_hosts)
    app.webrtc = await _start_webrtc(nursery, config, context, app.calls)
    hyper = hypercorn_internals.WebConfig()
    # A client that reads nothing for the idle timeout is gone (as over gRPC).
    hyper.send_timeout = context.limits.idle_timeout
    host, _ = config.host_port
    hyper.bind = [f"[{host}]:{config.web_port}" if ":" in host else f"{host}:{config.web_port}"]
    hyper.accesslog = None
    hyper.errorlog = logger
    # Our own check answers an oversized message with a typed error; hypercorn's
    # limit sits above it, for messages past any reason.
    hyper.websocket_max_message_size = context.limits.max_message_bytes + 65_536
    hyper.graceful_timeout = 1.0
    bound: list[str] = await nursery.start(
        functools.partial(hypercorn_serve, cast(Any, app), hyper, shutdown_trigger=stop.wait)
    )
    return app, int(bound[0].rsplit(":", 1)[1])


async def _start_webrtc(
    nursery: trio.Nursery, config: ServerConfig, context: ServiceContext, calls: LiveCalls
) -> Answerer | None:
    """Start the WebRTC edge beside the page, as ``--webrtc`` says (None: off).

    Imported only here: aiortc and its media stack load only when the edge is on.
    """
    mode = config.webrtc.mode
    if mode == "off":
        return None
    try:
        from remotemedia.transport.webrtc import WebRtcEdge
    except ImportError as error:
        if mode == "on":
            raise ConfigError(
                f"--webrtc on needs the WebRTC extra ({error.name} is not installed): "
                "pip install 'remotemedia[webrtc]', or --webrtc off."
            ) from None
        logger.info("WebRTC is off: remotemedia[webrtc] is not installed (%s).", error.name)
        return None
    edge = WebRtcEdge(context, config.webrtc, calls)
    await nursery.start(edge.run)
    return edge
