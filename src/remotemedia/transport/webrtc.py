"""The WebRTC edge: StreamPipeline over a peer connection, for browsers and phones.

``POST /v1/webrtc/offer`` on the web port (:mod:`~remotemedia.transport.web`
answers it through :meth:`WebRtcEdge.answer`) starts a session: the browser's
microphone track and a data channel (``remotemedia.v1``) in, the server's audio
track and the same data channel out. The call runner
(:mod:`remotemedia.service.calls`) runs it as it runs a gRPC or WebSocket call, so
limits, typed errors, metrics and the drain are the same; what differs is the
wire (:class:`_PeerWire`), and the media rules (:mod:`.webrtc_media`).

Lifetimes:

1. The session starts before the peer does: the offer is answered only once the
   session said ``ready`` (the manifest checked, the models loaded), so a refused
   manifest, token, origin, a full or draining server get an HTTP error with the
   typed error, and no peer is made for them.
2. The browser must open the data channel within :data:`CONNECT_TIMEOUT` of the
   answer; then it must be heard from (a microphone frame, or any data-channel
   message: the page sends the text message ``ping`` every second) at least every
   :data:`PEER_SILENCE`, or the session ends as if the tab were closed. aioice's
   own consent checks take about 30 s to give up on a vanished peer.
3. A closed tab, a closed data channel or a failed connection ends the session at
   once. When the session ends, the reply audio queued for the track plays out (in
   real time: a reply is heard to its end), what is queued for the data channel
   goes out, the browser gets :data:`HANG_UP_GRACE` to close, then the peer is
   closed, in a bounded ``finally``.

aiortc is asyncio code: the edge owns a ``trio_asyncio`` loop for it, opened when
the edge starts and closed after its calls. Each call's task names that loop in its
context, so its children (the runner's tasks) may call aiortc's synchronous methods.
"""

from __future__ import annotations

import collections
import json
import logging
from typing import Any

import trio
import trio_asyncio

from remotemedia.config import WebRtcConfig
from remotemedia.errors import (
    InvalidRequestError,
    RemoteMediaError,
    ResourceLimitError,
    SessionRejected,
)
from remotemedia.service.calls import CallEnd, LiveCalls, observed, run_stream_call
from remotemedia.service.context import ServiceContext
from remotemedia.service.metrics import ServerMetrics
from remotemedia.service.status import error_response
from remotemedia.service.wire import CallOrigin, ClientGone
from remotemedia.transport import aioice_internals, aiortc_internals
from remotemedia.transport.webrtc_media import Inbound, Outbound, Playout
from remotemedia.transport.webrtc_offer import (
    Offer,
    answer_body,
    audio_direction,
    http_status,
    refusal_body,
    refusal_of,
)
from remotemedia.transport.webrtc_peer import (
    MediaStreamError,
    PlayoutTrack,
    RTCPeerConnection,
    RTCSessionDescription,
    frame_samples,
    guarded,
    new_peer,
)
from remotemedia.v1 import streaming_pb2 as spb

__all__ = ["CONNECT_TIMEOUT", "HANG_UP_GRACE", "PEER_SILENCE", "WebRtcEdge"]

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0
"""Seconds from the answer until the browser's data channel must be open (ICE, DTLS)."""
PEER_SILENCE = 5.0
"""Seconds without a frame or a data-channel message after which the browser is gone."""
HANG_UP_GRACE = 2.0
"""Seconds a finished session waits for its last messages to go out and the browser
to close, before the server closes the peer."""
_CLOSE_TIMEOUT = 5.0
_CHANNEL_HIGH = 1024 * 1024  # bytes queued on the data channel before sends wait
_CHANNEL_LOW = 256 * 1024
_PENDING = 64  # responses held until the data channel opens


class WebRtcEdge:
    """The WebRTC edge: its asyncio loop, and one task per call.

    Args:
        context: What every call shares.
        config: ICE servers and host addresses.
        calls: Where its calls are counted (the browser edge's: the drain waits).
    """

    def __init__(self, context: ServiceContext, config: WebRtcConfig, calls: LiveCalls) -> None:
        self.context = context
        self.config = config
        self.calls = calls
        self._loop: Any = None
        self._nursery: trio.Nursery | None = None

    def description(self) -> bytes:
        """``GET /v1/webrtc``: the ICE servers a browser's peer should use."""
        servers = []
        for server in self.config.ice_servers:
            entry: dict[str, str] = {"urls": server.url}
            if server.username is not None:
                entry["username"] = server.username
                entry["credential"] = server.credential or ""
            servers.append(entry)
        return json.dumps({"ice_servers": servers}).encode()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the loop and the calls until cancelled (the web edge's stop)."""
        if self.config.host_addresses:
            aioice_internals.offer_only(self.config.host_addresses)
        aiortc_internals.apply()
        async with trio_asyncio.open_loop() as loop, trio.open_nursery() as nursery:
            loop.set_exception_handler(_log_loop_error)
            self._loop, self._nursery = loop, nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def answer(self, offer: Offer) -> tuple[int, bytes]:
        """Start the offer's session; the HTTP status and JSON body to reply with."""
        if self._nursery is None:
            self.context.metrics.refused.inc(reason="draining")
            return refusal_of(SessionRejected("The server is shutting down."))
        result: tuple[int, bytes] = await self._nursery.start(self._call, offer)
        return result

    async def _call(self, offer: Offer, *, task_status: trio.TaskStatus[tuple[int, bytes]]) -> None:
        trio_asyncio.current_loop.set(self._loop)  # aiortc looks its loop up, even in sync calls
        wire = _PeerWire(offer.init, self.context.limits.max_message_bytes, self.context.metrics)
        call = _Call(self.context, wire)
        call.origin.take_traceparent(offer.traceparent)
        async with self.calls.counting():
            with observed(self.context.metrics, "StreamPipeline") as outcome:
                outcome.success = await call.run(offer, self.config, task_status)


class _Call:
    """One WebRTC session: the runner over its wire, and the peer made once it is ready."""

    def __init__(self, context: ServiceContext, wire: _PeerWire) -> None:
        self.context = context
        self.wire = wire
        self.origin = CallOrigin("webrtc")
        self.end: CallEnd | None = None
        self.failure: RemoteMediaError | None = None
        self.ended = trio.Event()

    async def run(
        self, offer: Offer, config: WebRtcConfig, task_status: trio.TaskStatus[tuple[int, bytes]]
    ) -> bool:
        """Answer the offer (or refuse it), then serve until the session ends; True if clean."""
        peer: RTCPeerConnection | None = None
        answered = False
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._serve)
                first = await self.wire.first_response(self.ended)
                refusal = self._refusal(first)
                if refusal is not None:
                    task_status.started(refusal)
                    answered = True
                    return False
                peer = new_peer(config.ice_servers)
                try:
                    sdp = await self._connect(peer, offer.sdp, offer.audio, nursery)
                except Exception as error:  # an offer aiortc cannot use
                    self.wire.abort()
                    refused = InvalidRequestError(f"offer.sdp cannot be used: {error}")
                    task_status.started(refusal_of(refused))
                    answered = True
                    return False
                task_status.started((200, answer_body(sdp, _session_id(first))))
                answered = True
                nursery.start_soon(self.wire.watch)
                await self.ended.wait()
                await self.wire.hang_up()
                nursery.cancel_scope.cancel()
        except Exception:
            if not answered:
                raise  # to the offer's HTTP request (a 500, logged by the web server)
            logger.exception("A WebRTC session failed.")
            return False
        finally:
            if peer is not None:
                with trio.move_on_after(_CLOSE_TIMEOUT) as closing:
                    closing.shield = True
                    await trio_asyncio.aio_as_trio(peer.close)()
        return self.end is CallEnd.CLEAN

    async def _serve(self) -> None:
        try:
            self.end = await run_stream_call(self.wire, self.context, self.origin)
        except RemoteMediaError as error:  # refused admission, a bad message, a big response
            self.failure = error
            self.wire.say_error(error)  # (once ready; before, the offer's reply says it)
        finally:
            self.ended.set()

    def _refusal(self, first: bytes | None) -> tuple[int, bytes] | None:
        """The HTTP reply refusing the offer, if the session did not get ready."""
        if first is None:
            error = self.failure or RemoteMediaError("The session ended before it was ready.")
            return refusal_of(error)
        response = spb.StreamResponse.FromString(first)
        if response.WhichOneof("response") == "ready":
            return None
        if response.WhichOneof("response") == "error":
            return http_status(response.error), refusal_body(response.error)
        error = RemoteMediaError("The session answered its init with neither ready nor an error.")
        return refusal_of(error)

    async def _connect(
        self, peer: RTCPeerConnection, sdp: str, audio: str, nursery: trio.Nursery
    ) -> str:
        """Take the offer, attach the wire to the peer; the SDP answer."""
        wire = self.wire
        aio = trio_asyncio.aio_as_trio

        def on_state() -> None:
            if peer.connectionState in ("failed", "closed"):
                wire.lost(f"the peer connection is {peer.connectionState}")

        peer.on("connectionstatechange", guarded(on_state, "connection state"))
        peer.on("datachannel", guarded(wire.attach_channel, "data channel"))
        direction = audio_direction(sdp)
        await aio(peer.setRemoteDescription)(RTCSessionDescription(sdp, "offer"))
        plays = direction in ("sendrecv", "recvonly")  # the browser plays what we send
        if audio == "track" and plays:
            wire.track = PlayoutTrack(wire.playout, wire.room_made)
            peer.addTrack(wire.track)
            wire.outbound = Outbound(wire.playout, wire.inbound)
        elif audio == "none":
            wire.outbound = Outbound(None, wire.inbound)
        # (else audio outputs go on the data channel, as over the WebSocket)
        if direction in ("sendrecv", "sendonly"):  # its microphone
            track = next(t.receiver.track for t in peer.getTransceivers() if t.kind == "audio")
            nursery.start_soon(wire.read_track, track)
        await aio(peer.setLocalDescription)(await aio(peer.createAnswer)())
        description = peer.localDescription
        assert description is not None
        answer: str = description.sdp
        return answer


def _ready_or_error(data: bytes) -> bool:
    """Whether a response answers the init (progress ``_status`` results come first)."""
    return spb.StreamResponse.FromString(data).WhichOneof("response") in ("ready", "error")


def _session_id(ready: bytes | None) -> str:
    assert ready is not None
    return str(spb.StreamResponse.FromString(ready).ready.session_id)


def _log_loop_error(loop: Any, context: dict[str, Any]) -> None:
    """Log what an aiortc task left unhandled (trio-asyncio would raise it in the edge)."""
    logger.warning(
        "WebRTC (asyncio): %s", context.get("message"), exc_info=context.get("exception")
    )


class _PeerWire:
    """A WebRTC session as a call's :class:`~remotemedia.service.wire.Wire`.

    Requests: the init from the offer, then microphone frames and data-channel
    messages, in arrival order. Responses: audio to the outbound track's playout,
    the rest on the data channel (held until it opens).
    """

    def __init__(self, init: bytes, max_message_bytes: int, metrics: ServerMetrics) -> None:
        self.deliver: Any = None  # set by the runner: the fast path to the session
        self.metrics = metrics
        self.inbound = Inbound()
        self.playout = Playout()
        self.outbound: Outbound | None = None  # set once the peer is made
        self.track: PlayoutTrack | None = None
        self.channel: Any = None
        self.max_message_bytes = max_message_bytes
        # Requests and whether each is a microphone frame (only those are dropped).
        self._requests: collections.deque[tuple[bytes, bool]] = collections.deque([(init, False)])
        self._frames = 0
        self._arrived = trio.lowlevel.ParkingLot()
        self._failure: Exception | None = None
        self._gone: str | None = None
        self._heard = trio.current_time()
        self._first: bytes | None = None
        self._first_seen = trio.Event()
        self._pending: collections.deque[bytes] = collections.deque()
        self._room = trio.lowlevel.ParkingLot()
        self._opened = trio.Event()
        self._done = trio.Event()  # the browser is gone (or the channel closed)

    # -- the browser's side --------------------------------------------------------

    def attach_channel(self, channel: Any) -> None:
        """The browser's data channel opened: flush what waited, listen to it."""
        if self.channel is not None:
            return  # one channel per session; others are ignored
        self.channel = channel
        channel.bufferedAmountLowThreshold = _CHANNEL_LOW
        channel.on("message", guarded(self._message, "data-channel message"))
        channel.on("close", guarded(lambda: self.lost("the data channel closed"), "close"))
        channel.on("bufferedamountlow", guarded(self.room_made, "buffer"))
        channel.on("error", guarded(lambda error: logger.info("data channel: %s", error), "error"))
        self._heard = trio.current_time()
        self._opened.set()
        while self._pending:
            channel.send(self._pending.popleft())
        self._room.unpark_all()

    def _message(self, message: bytes | str) -> None:
        self._heard = trio.current_time()
        if isinstance(message, str):
            return  # a heartbeat (the page sends "ping")
        if len(message) > self.max_message_bytes:
            self._fail(
                ResourceLimitError(
                    f"A data-channel message of {len(message)} bytes exceeds the "
                    f"{self.max_message_bytes}-byte message limit (--max-message-mb)."
                )
            )
            return
        try:
            self._push(self.inbound.message(bytes(message)))
        except RemoteMediaError as error:
            self._fail(error)

    async def read_track(self, track: Any) -> None:
        """Take the browser's microphone frames to the session, until the track ends."""
        receive = trio_asyncio.aio_as_trio(track.recv)
        while True:
            try:
                frame = await receive()
            except MediaStreamError:
                self.lost("the browser's audio track ended")
                return
            self._heard = trio.current_time()
            samples, channels = frame_samples(frame)
            data = self.inbound.frame(samples, channels, self._frames)
            if data is None:  # the session is a second behind the microphone
                self.metrics.dropped.inc(reason="webrtc_session_behind")
            else:
                self._push(data, frame=True)

    async def watch(self) -> None:
        """End the session if the browser does not connect, or falls silent (rule 2)."""
        with trio.move_on_after(CONNECT_TIMEOUT):
            await self._opened.wait()
        if not self._opened.is_set():
            self.lost(f"the browser did not connect within {CONNECT_TIMEOUT:g} s")
            return
        while self._gone is None:
            deadline = self._heard + PEER_SILENCE
            if trio.current_time() >= deadline:
                self.lost(f"the browser was not heard from within {PEER_SILENCE:g} s")
                return
            await trio.sleep_until(deadline)

    def lost(self, why: str) -> None:
        """The browser is gone: the session ends at once."""
        if self._gone is None:
            self._gone = why
            logger.info("A WebRTC session's browser is gone: %s.", why)
        self._done.set()
        self._arrived.unpark_all()
        self._room.unpark_all()

    def _fail(self, error: Exception) -> None:
        self._failure = error
        self._arrived.unpark_all()

    def _push(self, data: bytes, *, frame: bool = False) -> None:
        deliver = self.deliver
        if not self._requests and deliver is not None and deliver(data):
            return
        self._requests.append((data, frame))
        self._frames += frame
        self._arrived.unpark_all()

    # -- the runner's side ---------------------------------------------------------

    async def receive(self) -> bytes | None:
        """The next request, in arrival order.

        Raises:
            ClientGone: The browser is gone.
            RemoteMediaError: A message the session cannot take.
        """
        while True:
            if self._gone is not None:
                raise ClientGone  # at once: nobody is left for the results
            if self._requests:
                break
            if self._failure is not None:
                raise self._failure
            await self._arrived.park()
        data, frame = self._requests.popleft()
        self._frames -= frame
        return data

    def send_now(self, data: bytes) -> bool:
        """Route a response now if nothing must wait: audio to the track, the rest out."""
        if self._first is None and _ready_or_error(data):
            self._first = data
            self._first_seen.set()
        if self._gone is not None:
            return False
        if self.playout.full or (self.channel is not None and self._channel_full()):
            return False
        if self.channel is None and len(self._pending) >= _PENDING:
            return False
        message = data if self.outbound is None else self.outbound.take(data)
        if self.track is not None and not self.playout.empty:
            self.track.wake()
        if message is not None:
            if self.channel is None:
                self._pending.append(message)
            else:
                self._send(message)
        return True

    async def send(self, data: bytes) -> None:
        """Route a response, waiting while the track or the channel is full.

        Raises:
            trio.BrokenResourceError: The browser is gone.
        """
        while not self.send_now(data):
            if self._gone is not None:
                raise trio.BrokenResourceError("the browser is gone")
            await self._room.park()

    def abort(self) -> None:
        """End the session now (the peer is closed when the call ends)."""
        self.lost("the server ended the session")

    def room_made(self) -> None:
        """The track sent a frame of the playout."""
        if self._room.statistics().tasks_waiting:
            self._room.unpark_all()

    def say_error(self, error: RemoteMediaError) -> None:
        """Tell the browser why its session ended, if it is connected."""
        if self.channel is not None and self._gone is None:
            self._send(spb.StreamResponse(error=error_response(error)).SerializeToString())

    # -- the call's side -----------------------------------------------------------

    async def first_response(self, ended: trio.Event) -> bytes | None:
        """The session's answer to its init (``ready``, or why not); None if it had none."""
        async with trio.open_nursery() as nursery:

            async def until_ended() -> None:
                await ended.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_ended)
            await self._first_seen.wait()
            nursery.cancel_scope.cancel()
        return self._first

    async def hang_up(self) -> None:
        """Let the reply audio play out and queued messages go; then let the browser close."""
        while self.track is not None and not self.playout.empty and self._gone is None:
            await self._room.park()  # the track makes room as it plays (real time)
        with trio.move_on_after(HANG_UP_GRACE):
            channel = self.channel
            if channel is not None and self._gone is None:
                channel.bufferedAmountLowThreshold = 0
                while channel.bufferedAmount and self._gone is None:
                    await self._room.park()
                await self._done.wait()

    def _channel_full(self) -> bool:
        return bool(self.channel.bufferedAmount > _CHANNEL_HIGH)

    def _send(self, message: bytes) -> None:
        try:
            self.channel.send(message)
        except ValueError as error:  # larger than the browser takes in one message
            self._fail(ResourceLimitError(f"A response cannot go on the data channel: {error}."))
