"""``SmartTurnNode``: is the user's turn complete? Smart Turn v3.2 at each pause in speech.

Smart Turn (pipecat-ai, BSD-2-Clause) is a small Whisper-encoder classifier that
hears, from the last 8 s of a speaker's audio, whether they finished their turn or
only paused: "I'd like to book a table for..." is incomplete however long the
silence after it. The ONNX model ships inside the ``pipecat-ai`` wheel, which
``scripts/tasks.py install`` installs without its dependencies (the model needs
none of them: pipecat is never imported; the features are computed here in numpy).

Connect the VAD to it, as to the accumulator: it takes the audio and the VAD's
events on one input, and at each ``pause`` (or an ``end`` with no pause before it)
judges the utterance so far, from its start to the moment of the event, and emits a
:class:`~remotemedia.events.TurnVerdict` (as Json: ``{"turn_complete": bool,
"probability": p, "at_ms": ms, "event": kind}``). An
accumulator given these results can end an utterance at a confident pause, or
wait longer at an end the model doubts (its ``end_turn_above``/``hold_turn_below``).
The model takes about 40 ms on one thread; it runs in a thread, in-process.
"""

from __future__ import annotations

import importlib.util
from collections import deque
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import soxr
import trio

from remotemedia.errors import ModelNotFoundError
from remotemedia.events import (
    SpeechEnded,
    SpeechPaused,
    SpeechStarted,
    TurnVerdict,
    VoiceActivity,
    event_of,
)
from remotemedia.media import Audio, RuntimeData
from remotemedia.nodes.audio.mel import RATE, log_mel
from remotemedia.nodes.base import Node
from remotemedia.params import param

__all__ = ["SmartTurnNode", "SmartTurnParams", "locate_model"]

PIPECAT = "pipecat-ai==1.14.0"
INSTALL = f"python3 -m pip install --no-deps '{PIPECAT}'"
_MODEL = Path("audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx")
_WINDOW_S = 8
_PRE_ROLL_MS = 200  # audio kept before the VAD's start, as pipecat does


def locate_model() -> Path | None:
    """The Smart Turn v3.2 ONNX file inside the installed pipecat-ai package (not imported)."""
    spec = importlib.util.find_spec("pipecat")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / _MODEL
    return path if path.is_file() else None


@attrs.frozen
class SmartTurnParams:
    """Parameters of :class:`SmartTurnNode`."""

    threshold: float = param(
        0.5, doc="Probability at or above which the turn counts as complete.", ge=0.0, le=1.0
    )
    model_path: str | None = param(
        None,
        doc="A Smart Turn v3 .onnx file; default: the one in the pipecat-ai package.",
        server_path=True,
    )
    cpu_threads: int = param(1, doc="Threads for one judgement.", ge=1, le=16)


class SmartTurnNode(Node[SmartTurnParams]):
    """Judge at each pause in speech whether the user's turn is complete (Smart Turn v3.2)."""

    node_type = "SmartTurnNode"
    Params = SmartTurnParams
    accepts = frozenset({"audio", "json"})
    produces = frozenset({"json"})

    def __init__(self, node_id: str, params: SmartTurnParams) -> None:
        super().__init__(node_id, params)
        self._session: Any = None
        self._chunks: deque[np.ndarray] = deque()  # 16 kHz mono, the last 8 s or more
        self._held = 0  # samples in _chunks
        self._received = 0  # samples received in all
        # A stream for input at another rate (one-shot resampling of each chunk would
        # add an edge at every chunk boundary), kept while the rate stays the same.
        self._resampler: tuple[int, soxr.ResampleStream] | None = None
        self._start: float | None = None  # stream ms the utterance began (pre-roll included)
        self._judged_at: float | None = None  # the event position last judged

    @classmethod
    def unavailable(cls) -> str | None:
        """Why the node cannot run here (None when it can)."""
        if locate_model() is None:
            return f"needs the Smart Turn model from the pipecat-ai wheel: {INSTALL}"
        return None

    async def initialize(self) -> None:
        """Load the model (in a thread)."""
        await self.report_progress("loading the Smart Turn model")
        self._session = await trio.to_thread.run_sync(self._load)

    def _load(self) -> Any:
        import onnxruntime as ort

        path = Path(self.params.model_path).expanduser() if self.params.model_path else None
        path = path or locate_model()
        if path is None or not path.is_file():
            raise ModelNotFoundError(
                f"SmartTurnNode needs the Smart Turn v3.2 model: {INSTALL}, or set model_path "
                f"to a Smart Turn v3 .onnx file{f' ({path} does not exist)' if path else ''}."
            )

        options = ort.SessionOptions()
        options.inter_op_num_threads = 1
        options.intra_op_num_threads = self.params.cpu_threads
        return ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    async def process(self, data: RuntimeData) -> list[RuntimeData]:
        """Keep the audio; judge the turn at a pause or end event."""
        if isinstance(data, Audio):
            self._keep(data)
            return []
        activity = event_of(data)
        if not isinstance(activity, VoiceActivity):
            return []
        outputs: list[RuntimeData] = []
        for transition in activity.transitions:
            ms = transition.ms
            if isinstance(transition, SpeechStarted):
                self._start, self._judged_at = ms - _PRE_ROLL_MS, None
            elif isinstance(transition, SpeechPaused | SpeechEnded) and self._judged_at != ms:
                self._judged_at = ms
                outputs.append(await self._judge(transition.kind, ms))
        return outputs

    def _keep(self, audio: Audio) -> None:
        samples, rate = audio.mono(), audio.sample_rate
        if rate != RATE:
            if self._resampler is None or self._resampler[0] != rate:
                self._resampler = (rate, soxr.ResampleStream(rate, RATE, 1, dtype="float32"))
            samples = self._resampler[1].resample_chunk(samples)
        self._chunks.append(samples)
        self._held += samples.size
        self._received += samples.size
        while self._chunks and self._held - self._chunks[0].size >= _WINDOW_S * RATE:
            self._held -= self._chunks.popleft().size

    async def _judge(self, kind: str, at_ms: float) -> TurnVerdict:
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        if self._start is not None:  # only the utterance: from its start to now
            since = self._received - round(max(self._start, 0.0) * RATE / 1000)
            audio = audio[-since:] if 0 < since < audio.size else audio
        probability = await trio.to_thread.run_sync(self.predict, audio)
        return TurnVerdict(
            complete=probability >= self.params.threshold,
            probability=round(probability, 4),
            at_ms=at_ms,
            transition=kind,
        )

    def predict(self, samples: np.ndarray) -> float:
        """The probability that the speech in ``samples`` (16 kHz mono) ends a turn."""
        features = log_mel(samples, _WINDOW_S)[np.newaxis]
        (probabilities,) = self._session.run(None, {"input_features": features})
        return float(np.asarray(probabilities).reshape(-1)[0])
