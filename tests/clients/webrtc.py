"""A WebRTC client for the tests and benchmarks: what a browser does, with aiortc.

It offers a data channel (``remotemedia.v1``) and, if asked, a microphone track that
plays given samples in real time (then silence), POSTs the offer to
``/v1/webrtc/offer``, and collects what comes back: responses from the data channel
and frames from the server's audio track, each with its arrival time.

Runs under Trio with a ``trio_asyncio`` loop (:func:`webrtc_loop`); only loopback
candidates are offered (the test server gets ``--webrtc-host-address 127.0.0.1``).
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import av
import numpy as np
import trio
import trio_asyncio
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from remotemedia.transport import aioice_internals
from remotemedia.transport.webrtc_media import Playout
from remotemedia.transport.webrtc_peer import PlayoutTrack
from remotemedia.v1 import streaming_pb2 as spb

RATE = 48_000


@contextlib.asynccontextmanager
async def webrtc_loop() -> AsyncIterator[None]:
    """The asyncio loop aiortc runs in, offering loopback candidates only."""
    aioice_internals.offer_only(["127.0.0.1"])
    async with trio_asyncio.open_loop():
        yield


class Refused(Exception):
    """The offer was refused: the HTTP status and the JSON body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status}: {body}")
        self.status = status
        self.body = body


class _Microphone(PlayoutTrack):
    """Plays ``samples`` (mono float32 at 48 kHz) in real time, then silence.

    The server's own outbound track, fed by hand: the same pacing, the same frames.
    """

    def __init__(self, samples: np.ndarray) -> None:
        super().__init__(Playout(capacity_s=3600), lambda: None, idle=True)
        self.sent_at: list[float] = []  # when each frame was handed to the sender
        self.play(samples)

    def play(self, samples: np.ndarray) -> None:
        """Play ``samples`` after what is left."""
        self.playout.push(samples.astype(np.float32, copy=False), RATE, None)

    async def recv(self) -> av.AudioFrame:
        frame = await super().recv()
        self.sent_at.append(time.monotonic())
        return frame


class RtcSession:
    """One session over WebRTC, as a browser opens it."""

    def __init__(self, pc: RTCPeerConnection, channel: Any) -> None:
        self.pc = pc
        self.channel = channel
        self.session_id = ""
        self.microphone: _Microphone | None = None
        self.responses: list[tuple[float, spb.StreamResponse]] = []
        self.frames: list[tuple[float, np.ndarray]] = []  # arrival, mono float32
        self.opened = trio.Event()
        self.closed = trio.Event()  # the data channel closed
        self.changed = trio.Event()  # something arrived (re-created after each wait)
        self.sequence = 0

    # -- sending -------------------------------------------------------------------

    def send(self, request: spb.StreamRequest) -> None:
        """Send one request on the data channel."""
        self.channel.send(request.SerializeToString())

    def send_text(self, text: str) -> int:
        """Send text as a data chunk; its sequence."""
        from remotemedia.v1 import common_pb2 as pb

        sequence = self.sequence
        self.sequence += 1
        buffer = pb.DataBuffer(text=pb.TextBuffer(text_data=text.encode(), encoding="utf-8"))
        self.send(spb.StreamRequest(data_chunk=spb.DataChunk(buffer=buffer, sequence=sequence)))
        return sequence

    def close(self) -> None:
        """Ask the server to finish and close (``StreamControl.CLOSE``)."""
        self.send(
            spb.StreamRequest(control=spb.StreamControl(command=spb.StreamControl.COMMAND_CLOSE))
        )

    def ping(self) -> None:
        """A heartbeat (a text message), as the page sends each second."""
        self.channel.send("ping")

    # -- receiving -----------------------------------------------------------------

    def _arrived(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def until(self, predicate: Any, timeout: float) -> None:
        """Wait until ``predicate(self)`` holds (checked whenever something arrives)."""
        with trio.fail_after(timeout):
            while not predicate(self):
                await self.changed.wait()

    def kinds(self) -> list[str]:
        """The kind of each response so far (``ready``, ``result``, ``closed``...)."""
        return [str(r.WhichOneof("response")) for _, r in self.responses]

    def json_results(self) -> list[tuple[float, dict[str, Any]]]:
        """Every JSON output of every result, with its arrival time."""
        out = []
        for at, response in self.responses:
            if response.WhichOneof("response") != "result":
                continue
            for buffer in response.result.data_outputs.values():
                if buffer.WhichOneof("data_type") == "json":
                    out.append((at, json.loads(buffer.json.json_payload)))
        return out

    def audio(self) -> np.ndarray:
        """Every frame of the server's track so far, as one mono float32 array."""
        if not self.frames:
            return np.zeros(0, np.float32)
        return np.concatenate([samples for _, samples in self.frames])


async def open_session(
    base: str,
    *,
    init: spb.StreamRequest | None = None,
    pipeline: str | None = None,
    token: str | None = None,
    origin: str | None = None,
    microphone: np.ndarray | None = None,
    listen: bool = True,
    audio: str | None = None,
    nursery: trio.Nursery,
) -> RtcSession:
    """Offer a session to the server at ``base`` (``http://host:port``) and connect.

    Raises:
        Refused: The server refused the offer (HTTP error status).
    """
    aio = trio_asyncio.aio_as_trio
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channel = pc.createDataChannel("remotemedia.v1", ordered=True)
    session = RtcSession(pc, channel)
    if microphone is not None:
        session.microphone = _Microphone(microphone)
        pc.addTrack(session.microphone)
    elif listen:
        pc.addTransceiver("audio", direction="recvonly")

    def on_message(message: bytes | str) -> None:
        if isinstance(message, bytes):
            session.responses.append((time.monotonic(), spb.StreamResponse.FromString(message)))
            session._arrived()

    def on_open() -> None:
        session.opened.set()
        session._arrived()

    def on_close() -> None:
        session.closed.set()
        session._arrived()

    channel.on("message", on_message)
    channel.on("open", on_open)
    channel.on("close", on_close)

    @pc.on("track")
    def on_track(track: Any) -> None:
        nursery.start_soon(_receive_frames, session, track)

    await aio(pc.setLocalDescription)(await aio(pc.createOffer)())
    body: dict[str, Any] = {"type": "offer", "sdp": pc.localDescription.sdp}
    if pipeline is not None:
        body["pipeline"] = pipeline
    if init is not None:
        body["init"] = base64.b64encode(init.SerializeToString()).decode()
    if audio is not None:
        body["audio"] = audio
    try:
        status, answer = await trio.to_thread.run_sync(post_offer, base, body, token, origin)
        if status == 200:
            session.session_id = answer["session_id"]
            await aio(pc.setRemoteDescription)(RTCSessionDescription(answer["sdp"], "answer"))
    except BaseException:
        await _closed(pc)
        raise
    if status != 200:
        await _closed(pc)
        raise Refused(status, answer)
    nursery.start_soon(_heartbeat, session)
    return session


async def _heartbeat(session: RtcSession) -> None:
    """A ping each second while the channel is open, as the page sends."""
    await session.opened.wait()
    while not session.closed.is_set() and session.pc.connectionState != "closed":
        session.ping()
        await trio.sleep(1)


async def _receive_frames(session: RtcSession, track: Any) -> None:
    receive = trio_asyncio.aio_as_trio(track.recv)
    while True:
        try:
            frame = await receive()
        except MediaStreamError:
            return
        stereo = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
        session.frames.append((time.monotonic(), stereo[:, 0].astype(np.float32) / 32768))
        session._arrived()


def post_offer(
    base: str, body: dict[str, Any], token: str | None = None, origin: str | None = None
) -> tuple[int, dict[str, Any]]:
    """POST ``body`` to ``/v1/webrtc/offer`` (blocking); the status and the JSON reply."""
    headers = {"content-type": "application/json"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    if origin is not None:
        headers["origin"] = origin
    request = urllib.request.Request(
        f"{base}/v1/webrtc/offer", json.dumps(body).encode(), headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


async def close_session(session: RtcSession) -> None:
    """Hang up (the peer connection closes)."""
    await _closed(session.pc)


async def _closed(pc: RTCPeerConnection) -> None:
    """Close ``pc``, even when cancelled, within a few seconds."""
    with trio.move_on_after(5) as closing:
        closing.shield = True
        await trio_asyncio.aio_as_trio(pc.close)()
