"""The Silero VAD ONNX model: locating it, one shared InferenceSession, per-stream state.

The model file ships inside the ``silero-vad`` wheel on PyPI. That wheel declares torch
as a dependency although the ONNX model needs none, so it is installed with
``pip install --no-deps silero-vad``; this module finds the file *without importing*
the package (its ``__init__`` imports torch).
"""

from __future__ import annotations

import functools
import importlib.util
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt

from remotemedia.errors import ModelNotFoundError
from remotemedia.nodes.batching import MicroBatcher

__all__ = ["FRAME_SAMPLES", "SileroModel", "SileroStream", "load_model", "locate_model"]

Float32Array = npt.NDArray[np.float32]

FRAME_SAMPLES = {16_000: 512, 8_000: 256}
"""Samples per model frame at each supported rate."""

_CONTEXT_SAMPLES = {16_000: 64, 8_000: 32}
_MODEL_FILE = "silero_vad.onnx"
_INSTALL_HINT = (
    "Install it without torch with `python3 -m pip install --no-deps silero-vad` "
    "(or run `python3 scripts/tasks.py install`), or set the node's model_path "
    "param to a silero_vad.onnx file."
)

_MAX_BATCH = 64  # about 3.5 ms of model time, on the second core

_lock = threading.Lock()
_models: dict[Path, SileroModel] = {}


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


def load_model(path: Path) -> SileroModel:
    """Return the process-wide model for a file, loading it once.

    Thread-safe: pipelines that initialise at the same time share one load.
    """
    with _lock:
        model = _models.get(path)
        if model is None:
            model = _models[path] = SileroModel(path)
        return model


class SileroModel:
    """One ONNX Runtime session shared by every stream, with cross-session batching.

    Frames submitted by concurrent streams at about the same time are scored in one
    batched call (see :class:`~remotemedia.nodes.batching.MicroBatcher`), which costs
    a fraction per frame and runs off the Trio thread.
    """

    def __init__(self, path: Path) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # One batch per model rate runs at a time (see nodes/batching.py), on the
        # second core; more intra-op threads would only contend with the Trio thread.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.path = path
        self._session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._batchers = {
            rate: MicroBatcher(functools.partial(self._score, rate), max_batch=_MAX_BATCH)
            for rate in FRAME_SAMPLES
        }

    async def score(
        self, rate: int, window: Float32Array, state: Float32Array
    ) -> tuple[float, Float32Array]:
        """Score one context+frame window; return the probability and the next state."""
        return await self._batchers[rate].submit((window, state))

    def score_now(
        self, rate: int, window: Float32Array, state: Float32Array
    ) -> tuple[float, Float32Array]:
        """Score one window synchronously, bypassing batching (for benchmarks and tools)."""
        return self._score(rate, [(window, state)])[0]

    def _score(
        self, rate: int, requests: list[tuple[Float32Array, Float32Array]]
    ) -> list[tuple[float, Float32Array]]:
        if len(requests) == 1:
            windows, states = requests[0][0][None, :], requests[0][1]
        else:
            windows = np.stack([window for window, _ in requests])
            states = np.concatenate([state for _, state in requests], axis=1)
        output, next_states = self._session.run(
            None, {"input": windows, "state": states, "sr": np.array(rate, dtype=np.int64)}
        )
        return [(float(output[i, 0]), next_states[:, i : i + 1, :]) for i in range(len(requests))]


class SileroStream:
    """The recurrent state of one audio stream through the shared model.

    Frames must have exactly ``FRAME_SAMPLES[sample_rate]`` samples. Like the
    reference wrapper, each frame is prefixed with the last samples of the previous
    one (the model's context window).
    """

    def __init__(self, model: SileroModel, sample_rate: int) -> None:
        if sample_rate not in FRAME_SAMPLES:
            raise ValueError(f"Silero VAD supports 8000 or 16000 Hz, not {sample_rate}")
        self._model = model
        self.sample_rate = sample_rate
        self.frame_samples = FRAME_SAMPLES[sample_rate]
        self._context = _CONTEXT_SAMPLES[sample_rate]
        self._previous = np.zeros(self._context, np.float32)
        self._state: Float32Array = np.zeros((2, 1, 128), np.float32)

    async def probability(self, frame: Float32Array) -> float:
        """Return the speech probability of the next frame and advance the state."""
        window = self._window(frame)
        probability, self._state = await self._model.score(self.sample_rate, window, self._state)
        return probability

    def probability_now(self, frame: Float32Array) -> float:
        """Like :meth:`probability`, synchronously and without batching."""
        window = self._window(frame)
        probability, self._state = self._model.score_now(self.sample_rate, window, self._state)
        return probability

    def _window(self, frame: Float32Array) -> Float32Array:
        window = np.concatenate((self._previous, frame)).astype(np.float32, copy=False)
        self._previous = window[-self._context :]
        return window
