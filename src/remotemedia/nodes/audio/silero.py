"""The Silero VAD ONNX model: locating it, one shared InferenceSession, per-stream state.

The model file ships inside the ``silero-vad`` wheel on PyPI. That wheel declares torch
as a dependency although the ONNX model needs none, so it is installed with
``pip install --no-deps silero-vad``; this module finds the file *without importing*
the package (its ``__init__`` imports torch).
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from remotemedia.errors import ModelNotFoundError

__all__ = ["FRAME_SAMPLES", "SileroStream", "load_model", "locate_model"]

FRAME_SAMPLES = {16_000: 512, 8_000: 256}
"""Samples per model frame at each supported rate."""

_CONTEXT_SAMPLES = {16_000: 64, 8_000: 32}
_MODEL_FILE = "silero_vad.onnx"
_INSTALL_HINT = (
    "Install it without torch with `python3 -m pip install --no-deps silero-vad` "
    "(or run `python3 scripts/tasks.py install`), or set the node's model_path "
    "param to a silero_vad.onnx file."
)

_lock = threading.Lock()
_sessions: dict[Path, Any] = {}


def locate_model(model_path: str | None = None) -> Path:
    """Return the path of the Silero VAD ONNX model.

    Args:
        model_path: An explicit model file; when None, the file shipped in the
            ``silero-vad`` package is used.

    Raises:
        ModelNotFoundError: The model file does not exist; the message says how to
            install it.
    """
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(
                f"The Silero VAD model file {path} does not exist. {_INSTALL_HINT}"
            )
        return path
    spec = importlib.util.find_spec("silero_vad")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "data" / _MODEL_FILE
        if path.is_file():
            return path
    raise ModelNotFoundError(f"The Silero VAD model is not installed. {_INSTALL_HINT}")


def load_model(path: Path) -> Any:
    """Return the process-wide InferenceSession for a model file, loading it once.

    Thread-safe: sessions of concurrent pipelines that initialise at the same time
    share one load. The session is used from one thread at a time (the Trio thread),
    so it gets a single intra-op thread; more would only contend with other sessions.
    """
    with _lock:
        session = _sessions.get(path)
        if session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
            _sessions[path] = session
        return session


class SileroStream:
    """The recurrent state of one audio stream through the shared model.

    Frames must have exactly ``FRAME_SAMPLES[sample_rate]`` samples. Like the
    reference wrapper, each frame is prefixed with the last samples of the previous
    one (the model's context window).
    """

    def __init__(self, session: Any, sample_rate: int) -> None:
        if sample_rate not in FRAME_SAMPLES:
            raise ValueError(f"Silero VAD supports 8000 or 16000 Hz, not {sample_rate}")
        self._session = session
        self.sample_rate = sample_rate
        self.frame_samples = FRAME_SAMPLES[sample_rate]
        context = _CONTEXT_SAMPLES[sample_rate]
        self._input = np.zeros((1, context + self.frame_samples), np.float32)
        self._context = context
        self._state = np.zeros((2, 1, 128), np.float32)
        self._rate = np.array(sample_rate, dtype=np.int64)

    def probability(self, frame: npt.NDArray[np.float32]) -> float:
        """Return the speech probability of the next frame and advance the state."""
        buffer = self._input
        buffer[0, : self._context] = buffer[0, -self._context :]
        buffer[0, self._context :] = frame
        output, self._state = self._session.run(
            None, {"input": buffer, "state": self._state, "sr": self._rate}
        )
        return float(output[0, 0])
