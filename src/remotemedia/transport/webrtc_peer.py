"""The WebRTC edge's aiortc objects: the peer connection, the outbound track, frames.

The only module that imports aiortc and PyAV (an import-linter contract keeps them
out of every other), and only once the WebRTC edge starts: the server core never
loads them. aiortc is asyncio code; the edge (:mod:`~remotemedia.transport.webrtc`)
runs it in the ``trio_asyncio`` loop it owns, and calls these from Trio tasks whose
context names that loop (``trio_asyncio.current_loop``), as aiortc's synchronous
methods look the loop up too.

Facts this relies on (measured with aiortc 1.16, ``docs/reference`` has the rest):

- ``RTCConfiguration(iceServers=None)`` means Google's public STUN server; the edge
  always passes a list, empty unless ``--webrtc-ice-server`` names some.
- The Opus decoder gives s16 stereo 48 kHz frames of 960 samples, packed
  (``to_ndarray()`` is ``(1, 1920)``, interleaved).
- The Opus encoder upmixes a mono frame at -3 dB, so the outbound track sends
  stereo frames whose channels are the same.
- A track must pace itself: the sender asks for the next frame as soon as it has
  sent one.
- An exception in an event handler closes the local connection while the remote
  still looks connected, so every handler is guarded (:func:`guarded`).
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from remotemedia.config import IceServer
from remotemedia.transport.webrtc_media import FRAME_SAMPLES, RATE, Playout

__all__ = [
    "MediaStreamError",
    "PlayoutTrack",
    "RTCPeerConnection",
    "RTCSessionDescription",
    "frame_samples",
    "guarded",
    "new_peer",
]

logger = logging.getLogger("remotemedia.transport.webrtc")

_TIME_BASE = fractions.Fraction(1, RATE)
_HANGOVER = 5
"""Frames of silence after a reply before the track goes quiet (as Opus DTX does): a
receiver's jitter buffer holds the last frames it got until more arrive (aiortc's,
4), so the reply's end plays now, not with the next reply."""
_SILENCE = np.zeros(FRAME_SAMPLES * 2, np.int16)


def new_peer(ice_servers: Sequence[IceServer]) -> RTCPeerConnection:
    """A peer connection that contacts only the configured ICE servers (none by default)."""
    servers = [RTCIceServer(s.url, s.username, s.credential) for s in ice_servers]
    return RTCPeerConnection(RTCConfiguration(iceServers=servers))


def frame_samples(frame: av.AudioFrame) -> tuple[np.ndarray, int]:
    """A decoded frame's interleaved s16 samples and its channel count.

    Raises:
        ValueError: It is not packed s16 at 48 kHz (not what aiortc's Opus gives).
    """
    if frame.format.name != "s16" or frame.sample_rate != RATE:
        raise ValueError(
            f"an inbound audio frame is {frame.format.name} at {frame.sample_rate} Hz, "
            f"not s16 at {RATE} Hz"
        )
    samples: np.ndarray = frame.to_ndarray().reshape(-1)
    return samples, len(frame.layout.channels)


class PlayoutTrack(MediaStreamTrack):
    """The server's audio track: a :class:`Playout`'s frames in real time.

    Between replies it sends nothing (after :data:`_HANGOVER` frames of silence), as
    Opus DTX would: encoding, encrypting and sending 50 frames of silence a second
    cost as much as speech, in every session. When audio comes (:meth:`wake`), the
    frames' timestamps jump to the wall clock, so the browser plays them at once.

    Args:
        playout: Where the call queues reply audio.
        on_sent: Called after each frame (room was made).
        idle: Send silence instead of nothing between replies (a peer that needs a
            steady stream, such as a test's microphone).
    """

    kind = "audio"

    def __init__(
        self, playout: Playout, on_sent: Callable[[], None], *, idle: bool = False
    ) -> None:
        super().__init__()
        self.playout = playout
        self.on_sent = on_sent
        self.idle = idle
        self._start: float | None = None
        self._pts = 0
        self._silent = _HANGOVER  # frames of silence sent since the last audio
        self._queued = asyncio.Event()

    def wake(self) -> None:
        """Audio was queued: send it (called from the call's Trio task)."""
        self._queued.set()

    async def recv(self) -> av.AudioFrame:
        """The next 20 ms frame, at its time (the sender asks as soon as it has sent one)."""
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        else:
            self._pts += FRAME_SAMPLES
            wait = self._start + self._pts / RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        mono = self.playout.pop()
        if mono is not None:
            self._silent = 0
        elif self.idle or self._silent < _HANGOVER:
            self._silent += 1  # a little silence first: it pushes the reply's end out
        else:
            while mono is None:
                self._queued.clear()
                await self._queued.wait()
                # Resume on the wall clock: the gap is the silence between replies.
                late = (time.monotonic() - self._start) * RATE - self._pts
                self._pts += max(0, int(late) // FRAME_SAMPLES) * FRAME_SAMPLES
                mono = self.playout.pop()
            self._silent = 0
        stereo = _SILENCE if mono is None else np.repeat(mono, 2)  # L, R the same: no -3 dB
        self.on_sent()
        frame = av.AudioFrame.from_ndarray(stereo.reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = _TIME_BASE
        return frame


def guarded(handler: Callable[..., None], what: str) -> Callable[..., None]:
    """``handler``, logging what it raises instead of letting pyee close the connection."""

    def call(*args: Any) -> None:
        try:
            handler(*args)
        except Exception:
            logger.exception("The WebRTC edge's %s handler failed.", what)

    return call
