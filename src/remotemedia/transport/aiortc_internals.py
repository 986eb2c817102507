"""aiortc's internals, patched from this module only, when the WebRTC edge starts.

Importing this module changes nothing: :func:`apply` patches aiortc, and the WebRTC
edge (:mod:`~remotemedia.transport.webrtc`) calls it when it starts. The patch is
written for the aiortc versions in :data:`WRITTEN_FOR`
(``tests/unit/test_third_party_pins.py`` fails on any other, and ``pyproject.toml``
pins the same). Before allowing another version, re-check the item against its
source:

1. ``aiortc.rtcrtpreceiver.JitterBuffer``, the name ``RTCRtpReceiver.__init__`` looks
   up to build each receiver's buffer, becomes :class:`_PromptJitterBuffer`. aiortc
   builds an audio buffer with ``prefetch=4``: a frame is released only once four
   more have arrived, 80 ms added to every microphone frame before the session sees
   it (measured: chunk -> VAD result 85 ms at p50 with it, on loopback). Prefetch
   adds no robustness: a missing packet holds the frames after it whatever the
   prefetch (until the buffer's 16 frames overflow), and a reordered one fills its
   hole the same way. With ``prefetch=1`` a frame goes as soon as the next one
   arrives (the earliest the buffer can tell it is whole). Video buffers are left
   as they are.
"""

from __future__ import annotations

from typing import Any

from aiortc import rtcrtpreceiver
from aiortc.jitterbuffer import JitterBuffer

__all__ = ["AUDIO_PREFETCH", "DISTRIBUTION", "WRITTEN_FOR", "apply"]

DISTRIBUTION = "aiortc"
"""The distribution this module patches."""
WRITTEN_FOR = ("1.16.0",)
"""aiortc versions whose source item 1 was checked against."""
AUDIO_PREFETCH = 1
"""Frames an audio receiver waits for after a frame before releasing it (item 1)."""


class _PromptJitterBuffer(JitterBuffer):
    """aiortc's jitter buffer, releasing audio frames without the 80 ms wait (item 1)."""

    def __init__(self, capacity: int, prefetch: int = 0, is_video: bool = False) -> None:
        if not is_video:
            prefetch = min(prefetch, AUDIO_PREFETCH)
        super().__init__(capacity, prefetch=prefetch, is_video=is_video)


def apply() -> None:
    """Patch aiortc for the WebRTC edge (item 1); calling it again does nothing."""
    module: Any = rtcrtpreceiver
    module.JitterBuffer = _PromptJitterBuffer
