"""What the WebRTC edge does with media and messages, without any I/O (sans-IO).

A WebRTC call carries the StreamPipeline messages on two paths each way: the
browser's microphone track and a data channel in, the server's audio track and the
same data channel out. This module turns between the two and the call runner's
bytes (serialized ``StreamRequest`` / ``StreamResponse``), so that the peer code
(:mod:`~remotemedia.transport.webrtc_peer`) only moves frames and messages.

Rules:

1. **In.** Each 20 ms microphone frame becomes one audio ``DataChunk`` of 48 kHz
   mono float32, as the page's WebSocket chunks are. Chunks from the track and from
   the data channel share one sequence count, since a session's sequences must not
   go backwards: a frame takes the next number, a data-channel chunk keeps its own
   unless that is behind the count, then it takes the next (:class:`Sequencer`).
2. **Out.** Every audio output of a result goes to the outbound track
   (:class:`Playout`), or nowhere if the client asked for none (``offer.audio``);
   everything else (the result's other outputs, ``ready``, errors, metrics,
   ``closed``) goes to the data channel as it is.
3. **Barge-in.** An ``interrupted`` result cuts the playout first: what is queued
   of the reply is dropped before the result is forwarded, and its ``spoken_ms``
   becomes the audio of that turn actually sent on the track, in place of the
   coordinator's estimate (as LiveKit reports its playback position).
4. **Drops.** Microphone frames the session cannot take in time are dropped, never
   queued without bound (:class:`Inbound`); the count is added to the session's
   ``StreamMetrics.chunks_dropped``.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np
import soxr

from remotemedia.errors import InvalidRequestError
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import streaming_pb2 as spb

__all__ = [
    "FRAME_SAMPLES",
    "RATE",
    "Inbound",
    "Outbound",
    "Playout",
    "Sequencer",
    "audio_request",
    "mono_float",
]

RATE = 48_000
"""The sample rate of both tracks (Opus in WebRTC is always 48 kHz)."""
FRAME_SAMPLES = RATE // 50
"""Samples in one 20 ms frame."""
_FRAME_MS = 20


@attrs.define
class Sequencer:
    """Numbers the chunks of one call in arrival order (rule 1)."""

    next: int = 0

    def take(self, own: int | None = None) -> int:
        """The sequence of the next chunk: ``own`` if it is not behind, else the next."""
        sequence = self.next if own is None else max(own, self.next)
        self.next = sequence + 1
        return sequence


def mono_float(samples: np.ndarray, channels: int) -> np.ndarray:
    """Interleaved s16 samples of ``channels`` channels as mono float32 in [-1, 1)."""
    floats = samples.astype(np.float32).reshape(-1, channels)
    mono = floats[:, 0] if channels == 1 else floats.mean(axis=1)
    result: np.ndarray = mono * np.float32(1 / 32768)
    return result


def audio_request(samples: np.ndarray, sequence: int, rate: int = RATE) -> bytes:
    """A serialized ``StreamRequest`` carrying mono float32 ``samples`` as a data chunk."""
    audio = pb.AudioBuffer(
        samples=samples.astype("<f4", copy=False).tobytes(),
        sample_rate=rate,
        channels=1,
        format=pb.AUDIO_FORMAT_F32,
        num_samples=samples.size,
    )
    chunk = spb.DataChunk(buffer=pb.DataBuffer(audio=audio), sequence=sequence)
    return spb.StreamRequest(data_chunk=chunk).SerializeToString()


class Inbound:
    """Requests from the browser on their way to the session: numbered, and bounded.

    Args:
        max_frames: Microphone frames that may wait for the session; one more is
            dropped and counted (rule 4).
    """

    def __init__(self, max_frames: int = 50) -> None:
        self.max_frames = max_frames
        self.sequencer = Sequencer()
        self.dropped = 0

    def frame(self, samples: np.ndarray, channels: int, waiting: int) -> bytes | None:
        """The request for one decoded s16 frame, or None if it is dropped.

        Args:
            samples: The frame's interleaved s16 samples at :data:`RATE`.
            channels: Its channel count.
            waiting: Frames already waiting for the session.
        """
        if waiting >= self.max_frames:
            self.dropped += 1
            return None
        return audio_request(mono_float(samples, channels), self.sequencer.take())

    def message(self, data: bytes) -> bytes:
        """A data-channel message as the request the session gets (renumbered if needed).

        Raises:
            InvalidRequestError: It is not a StreamRequest, or it is an ``init``
                (the session's init came with the offer).
        """
        try:
            request = spb.StreamRequest.FromString(data)
        except Exception:
            raise InvalidRequestError(
                "A data-channel message is not a serialized StreamRequest."
            ) from None
        kind = request.WhichOneof("request")
        if kind == "init":
            raise InvalidRequestError(
                "An init arrived on the data channel; a WebRTC session's init comes with "
                "its offer (POST /v1/webrtc/offer), once."
            )
        if kind in ("data_chunk", "audio_chunk"):
            chunk = getattr(request, kind)
            sequence = self.sequencer.take(chunk.sequence)
            if sequence != chunk.sequence:
                chunk.sequence = sequence
                return request.SerializeToString()
        return data


class Playout:
    """Reply audio waiting for the outbound track: 20 ms frames of 48 kHz mono s16.

    Each frame is tagged with the turn its audio belongs to (the coordinator's
    ``turn`` metadata), so a cut knows how much of that turn was sent.

    Args:
        capacity_s: Seconds it holds; beyond that the call waits for the track
            (back-pressure to the session, as a slow client gets).
    """

    def __init__(self, capacity_s: float = 60.0) -> None:
        self.capacity = round(capacity_s * 1000 / _FRAME_MS)
        self._frames: collections.deque[tuple[np.ndarray, str | None]] = collections.deque()
        self._partial = np.zeros(0, np.float32)
        self._partial_turn: str | None = None
        self._resamplers: dict[int, soxr.ResampleStream] = {}
        self.sent: collections.Counter[str | None] = collections.Counter()  # frames per turn

    @property
    def full(self) -> bool:
        """True while it holds its capacity or more."""
        return len(self._frames) >= self.capacity

    @property
    def queued(self) -> int:
        """Whole frames waiting."""
        return len(self._frames)

    @property
    def empty(self) -> bool:
        """True when nothing is left to play, not even part of a frame."""
        return not self._frames and not self._partial.size

    def push(self, samples: np.ndarray, rate: int, turn: str | None) -> None:
        """Queue mono float32 ``samples`` at ``rate`` (resampled to :data:`RATE`)."""
        if rate != RATE:
            resampler = self._resamplers.get(rate)
            if resampler is None:
                resampler = self._resamplers[rate] = soxr.ResampleStream(
                    rate, RATE, 1, dtype="float32"
                )
            samples = resampler.resample_chunk(samples.astype(np.float32, copy=False))
        if turn != self._partial_turn and self._partial.size:
            self._flush_partial()
        self._partial_turn = turn
        pending = np.concatenate((self._partial, samples)) if self._partial.size else samples
        whole = pending.size - pending.size % FRAME_SAMPLES
        for start in range(0, whole, FRAME_SAMPLES):
            self._frames.append((_s16(pending[start : start + FRAME_SAMPLES]), turn))
        self._partial = pending[whole:].copy()

    def pop(self) -> np.ndarray | None:
        """The next frame to send (s16), or None: the track sends silence."""
        if not self._frames and self._partial.size:
            self._flush_partial()
        if not self._frames:
            return None
        frame, turn = self._frames.popleft()
        self.sent[turn] += 1
        return frame

    def cut(self, turn: str | None) -> int:
        """Drop everything queued; the milliseconds of ``turn`` sent so far."""
        self._frames.clear()
        self._partial = np.zeros(0, np.float32)
        self._resamplers.clear()  # what they hold belongs to the cut reply
        return self.sent[turn] * _FRAME_MS

    def _flush_partial(self) -> None:
        frame = np.zeros(FRAME_SAMPLES, np.float32)
        frame[: self._partial.size] = self._partial
        self._frames.append((_s16(frame), self._partial_turn))
        self._partial = np.zeros(0, np.float32)


def _s16(samples: np.ndarray) -> np.ndarray:
    clipped = np.clip(samples * 32768.0, -32768, 32767)
    result: np.ndarray = clipped.astype(np.int16)
    return result


class Outbound:
    """Responses on their way to the browser: audio to the playout, the rest returned.

    Args:
        playout: Where audio outputs go; None: nowhere (the client asked for none).
        inbound: Whose drop count the session's metrics report (rule 4).
    """

    def __init__(self, playout: Playout | None, inbound: Inbound) -> None:
        self.playout = playout
        self.inbound = inbound

    def take(self, data: bytes) -> bytes | None:
        """Route one serialized response; what goes on the data channel, if anything."""
        response = spb.StreamResponse.FromString(data)
        kind = response.WhichOneof("response")
        if kind == "metrics" and self.inbound.dropped:
            response.metrics.chunks_dropped += self.inbound.dropped
            return response.SerializeToString()
        if kind != "result":
            return data
        outputs = response.result.data_outputs
        audio = [
            node for node, buffer in outputs.items() if buffer.WhichOneof("data_type") == "audio"
        ]
        cut = _interrupted(outputs)
        if not audio and cut is None:
            return data
        for node in audio:
            if self.playout is not None:
                self._play(self.playout, outputs[node].audio)
            del outputs[node]
        if cut is not None and self.playout is not None:
            node, value = cut
            value["spoken_ms"] = self.playout.cut(value.get("turn"))
            outputs[node].json.json_payload = json.dumps(value, separators=(",", ":"))
        return response.SerializeToString() if outputs else None

    @staticmethod
    def _play(playout: Playout, audio: pb.AudioBuffer) -> None:
        samples = _samples(audio)
        turn = None
        if audio.HasField("metadata_json"):
            metadata = json.loads(audio.metadata_json or b"{}")
            value = metadata.get("turn") if isinstance(metadata, dict) else None
            turn = value if isinstance(value, str) else None
        playout.push(samples, audio.sample_rate, turn)


def _samples(audio: pb.AudioBuffer) -> np.ndarray:
    """An AudioBuffer's samples as mono float32 (the server sends float32)."""
    samples: np.ndarray = np.frombuffer(audio.samples, "<f4")
    channels = max(audio.channels, 1)
    if channels > 1:
        frames = samples[: samples.size - samples.size % channels].reshape(-1, channels)
        samples = frames.mean(axis=1)
    return samples.astype(np.float32, copy=False)


def _interrupted(outputs: Mapping[str, pb.DataBuffer]) -> tuple[str, dict[str, Any]] | None:
    """The output that says a reply was interrupted, and its value, if there is one."""
    for node, buffer in outputs.items():
        if buffer.WhichOneof("data_type") != "json":
            continue
        payload = buffer.json.json_payload
        if '"interrupted"' not in payload:
            continue
        value = json.loads(payload)
        if isinstance(value, dict) and value.get("interrupted") is True:
            return node, value
    return None
