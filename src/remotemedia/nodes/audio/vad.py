"""``SileroVADNode``: voice activity detection with the Silero VAD ONNX model."""

from __future__ import annotations

import attrs
import numpy as np
import soxr
import trio

from remotemedia.events import VoiceActivity, speech_transition
from remotemedia.media import Audio, RuntimeData
from remotemedia.nodes.audio.segmenter import Segmenter, SegmenterConfig, SpeechEvent
from remotemedia.nodes.audio.silero import FRAME_SAMPLES, SileroStream, load_model, locate_model
from remotemedia.nodes.base import Node
from remotemedia.params import param

__all__ = ["SileroVADNode", "VADParams"]


@attrs.frozen
class VADParams:
    """Parameters of :class:`SileroVADNode`."""

    threshold: float = param(0.5, doc="Speech probability that starts speech.", ge=0.0, le=1.0)
    neg_threshold: float | None = param(
        None,
        doc="Probability below which speech counts as silence (default threshold - 0.15).",
        ge=0.0,
        le=1.0,
    )
    sampling_rate: int = param(
        16_000,
        doc="Rate the model runs at; other input rates are resampled.",
        choices=(8_000, 16_000),
    )
    min_speech_duration_ms: int = param(
        250, doc="Shorter bursts of speech are ignored.", ge=0, le=60_000
    )
    min_silence_duration_ms: int = param(100, doc="Silence needed to end speech.", ge=0, le=60_000)
    speech_pad_ms: int = param(
        30, doc="Padding added before starts and after ends.", ge=0, le=5_000
    )
    model_path: str | None = param(
        None,
        doc="A silero_vad.onnx file; default: the one in the silero-vad package.",
        server_path=True,
    )
    emit_audio: bool = param(
        True,
        doc="Pass each audio chunk on after its event (as the original); off: events only.",
    )
    speculative_silence_ms: int = param(
        0,
        doc="Silence after which a 'pause' is reported before the end (then 'resume' or "
        "the end at the same time); a speculative accumulator transcribes from it. 0: off.",
        ge=0,
        le=60_000,
    )

    def __attrs_post_init__(self) -> None:
        if self.neg_threshold is not None and self.neg_threshold > self.threshold:
            raise ValueError(
                f"neg_threshold ({self.neg_threshold}) must not exceed threshold ({self.threshold})"
            )
        if self.speculative_silence_ms >= max(self.min_silence_duration_ms, 1):
            raise ValueError(
                f"speculative_silence_ms ({self.speculative_silence_ms}) must be shorter than "
                f"min_silence_duration_ms ({self.min_silence_duration_ms})"
            )

    @property
    def effective_neg_threshold(self) -> float:
        """The exit threshold actually used."""
        if self.neg_threshold is not None:
            return self.neg_threshold
        return max(self.threshold - 0.15, 0.0)


class SileroVADNode(Node[VADParams]):
    """Detect speech; emit one JSON event per chunk (with any speech start/end), then the audio.

    Audio of any chunk size, rate and channel count is mixed to mono, resampled to
    the model rate and re-framed internally (512 samples at 16 kHz, 256 at 8 kHz).
    For every input chunk the node emits, as the original does, one JSON event
    (``has_speech``, ``speech_probability``, ``is_speech_start``, ``is_speech_end``,
    ``timestamp_ms``, ``rms``, ``peak``, ``samples``, ``sample_rate``, plus
    ``speech_start_ms``/``speech_end_ms`` and an ordered ``events`` list when speech
    starts or ends in it; with ``speculative_silence_ms``, that list also holds
    ``pause`` and ``resume`` transitions), then the input audio unchanged. Times are milliseconds of
    stream time since the first input. Non-audio inputs are passed through. The event
    is a :class:`~remotemedia.events.VoiceActivity`: nodes read its typed fields,
    clients its Json.
    """

    node_type = "SileroVADNode"
    Params = VADParams
    accepts = frozenset({"audio"})
    produces = frozenset({"json", "audio"})

    def __init__(self, node_id: str, params: VADParams) -> None:
        super().__init__(node_id, params)
        self._model: SileroStream | None = None
        rate = params.sampling_rate
        self._segmenter = Segmenter(
            SegmenterConfig(
                threshold=params.threshold,
                neg_threshold=params.effective_neg_threshold,
                min_speech_samples=rate * params.min_speech_duration_ms // 1000,
                min_silence_samples=rate * params.min_silence_duration_ms // 1000,
                pad_samples=rate * params.speech_pad_ms // 1000,
                pause_samples=rate * params.speculative_silence_ms // 1000 or None,
            )
        )
        self._frame = FRAME_SAMPLES[rate]
        self._pending = np.zeros(0, np.float32)
        self._resampler: soxr.ResampleStream | None = None
        self._input_rate: int | None = None
        self._stream_ms = 0.0
        self._probability = 0.0

    async def initialize(self) -> None:
        """Load (or reuse) the shared model; the first load runs in a worker thread."""
        path = locate_model(self.params.model_path)
        model = await trio.to_thread.run_sync(load_model, path)
        self._model = SileroStream(model, self.params.sampling_rate)

    async def process(self, data: RuntimeData) -> list[RuntimeData]:
        """Run the model over the chunk's complete frames; return its event, then the audio."""
        if not isinstance(data, Audio):
            return [data]
        if self._model is None:
            raise RuntimeError("process() called before initialize()")
        events: list[SpeechEvent] = []
        if data.sample_rate != self._input_rate:
            events += await self._drain_resampler()
            self._switch_rate(data.sample_rate)
        self._stream_ms += data.num_frames * 1000 / data.sample_rate
        mono = data.mono()
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono)
        events += await self._run(mono)
        if self.params.emit_audio:
            return [self._event(events, data), data]
        return [self._event(events, data)]

    async def flush(self) -> list[RuntimeData]:
        """Score the last partial frame (zero-padded) and close any open speech."""
        if self._model is None or self._input_rate is None:
            return []
        events = await self._drain_resampler()
        if self._pending.size:
            frame = np.zeros(self._frame, np.float32)
            frame[: self._pending.size] = self._pending
            self._probability = await self._model.probability(frame)
            event = self._segmenter.push(self._probability, self._pending.size)
            events += [event] if event else []
            self._pending = np.zeros(0, np.float32)
        events += self._segmenter.finish()
        return [self._event(events, None)] if events else []

    async def _drain_resampler(self) -> list[SpeechEvent]:
        # The resampler holds a few ms of audio; score it before the stream changes
        # rate or ends, so no samples are lost and the stream clock stays exact.
        if self._resampler is None:
            return []
        tail = self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
        self._resampler = None
        return await self._run(tail)

    def _switch_rate(self, rate: int) -> None:
        # Resampling to the model rate keeps the model's view continuous across a
        # change of input rate.
        model_rate = self.params.sampling_rate
        self._resampler = (
            None
            if rate == model_rate
            else soxr.ResampleStream(rate, model_rate, 1, dtype="float32", quality="MQ")
        )
        self._input_rate = rate

    async def _run(self, samples: np.ndarray) -> list[SpeechEvent]:
        assert self._model is not None
        if self._pending.size:
            samples = np.concatenate((self._pending, samples))
        frame = self._frame
        whole = samples.size - samples.size % frame
        events = []
        for start in range(0, whole, frame):
            self._probability = await self._model.probability(samples[start : start + frame])
            event = self._segmenter.push(self._probability, frame)
            if event is not None:
                events.append(event)
        self._pending = samples[whole:].copy()
        return events

    def _event(self, events: list[SpeechEvent], chunk: Audio | None) -> VoiceActivity:
        """The chunk's one report, whose wire form has the original runtime's fields.

        ``is_speech_start``/``is_speech_end`` say whether a start/end happened in this
        chunk, ``speech_start_ms``/``speech_end_ms`` when (the last of each kind), and
        ``events`` lists every transition in order, for chunks long enough to hold
        more than one (:class:`~remotemedia.events.VoiceActivity`).
        """
        model_rate = self.params.sampling_rate
        transitions = tuple(
            speech_transition(e.kind, round(e.position * 1000 / model_rate, 3)) for e in events
        )
        rms: float | None = None
        peak: float | None = None
        if chunk is not None:
            mono = chunk.mono()
            rms = round(float(np.sqrt(np.mean(mono * mono))), 5) if mono.size else 0.0
            peak = round(float(np.abs(mono).max()), 5) if mono.size else 0.0
        return VoiceActivity(
            has_speech=self._segmenter.in_speech,
            probability=round(self._probability, 4),
            timestamp_ms=round(self._stream_ms, 3),
            transitions=transitions,
            rms=rms,
            peak=peak,
            samples=None if chunk is None else chunk.num_frames,
            sample_rate=None if chunk is None else chunk.sample_rate,
        )
