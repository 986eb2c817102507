"""What every transformers-based node shares.

Its environment, model folders, devices, and streaming generation out of a thread.

Nothing here imports torch or transformers at module level: these nodes are declared
in the server (their params, their environment) but only ever run in a worker
process whose environment has those packages.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import trio

from remotemedia.environments import Environment
from remotemedia.errors import ModelNotFoundError

__all__ = [
    "DEVICES",
    "DTYPES",
    "TORCH_ENVIRONMENT",
    "Handoff",
    "jsonable",
    "model_config",
    "model_source",
    "mono_at",
    "resolve_device",
    "resolve_dtype",
    "stopping_when",
    "stream_from_thread",
]

TORCH_ENVIRONMENT = Environment(requirements=("torch>=2.8", "transformers>=5.18,<6"))
"""The default environment of the transformers nodes: the server's Python, torch and
transformers. An operator pins what their machine has in ``--node-config`` (``torch==2.13.0``
is a CPU build lying on some machines' disks; PyPI's newest is a CUDA build of GBs)."""

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "float16", "bfloat16")


def model_source(model: str | None, node: str, what: str) -> tuple[str, bool]:
    """Where to load a model from: ``(folder or hub id, is_local)``.

    A folder must exist; anything else is taken as a hub id (only the server's own
    config can name one: a client's ``model`` is a server path, refused by default).

    Raises:
        ModelNotFoundError: No model was given, or a path that does not exist.
    """
    if not model:
        raise ModelNotFoundError(
            f"{node} needs a model: set params.model to a local folder of {what} in "
            "Hugging Face layout (downloaded once, e.g. with `hf download`), in the "
            "manifest or in the server's --node-config."
        )
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path.resolve()), True
    if model.startswith(("/", ".", "~")) or path.exists():
        raise ModelNotFoundError(
            f"{node}: the model folder {model} does not exist (or is not a folder)."
        )
    return model, False


def model_config(folder: Path, node: str, wanted: str) -> dict[str, Any]:
    """A model folder's ``config.json`` (read without torch, so a wrong folder fails at once).

    Raises:
        ModelNotFoundError: It is missing or not a JSON object; ``wanted`` says what the
            folder should hold.
    """
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(
            f"{node}: {folder} has no readable config.json ({exc}); {wanted}."
        ) from exc
    if not isinstance(config, dict):
        raise ModelNotFoundError(f"{node}: {folder}/config.json is not an object; {wanted}.")
    return config


def offline() -> None:
    """Keep the Hugging Face libraries off the network in this (worker) process.

    Called before importing them when the model is a local folder: nothing a client
    sends may make the server download anything, and nothing here needs to.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def resolve_device(device: str) -> str:
    """``auto``: the first CUDA device when there is one, else the CPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelNotFoundError(
            f"device {device!r} was asked for, but torch sees no CUDA device here "
            "(is this a CPU build of torch?); use device 'auto' or 'cpu'."
        )
    return device


def resolve_dtype(dtype: str, device: str) -> Any:
    """``auto``: bfloat16 on a GPU, float32 on the CPU (where bfloat16 is slow or fails)."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def mono_at(samples: np.ndarray, channels: int, rate: int, target: int) -> np.ndarray:
    """Interleaved float32 samples as mono at ``target`` Hz (what a model was trained on)."""
    import soxr

    mono = samples.reshape(-1, channels).mean(axis=1) if channels > 1 else samples
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if rate != target:
        mono = soxr.resample(mono, rate, target).astype(np.float32, copy=False)
    return mono


def jsonable(value: Any) -> Any:
    """A pipeline's output as plain JSON (numpy and torch scalars and arrays to lists)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        return jsonable(value.tolist())
    if isinstance(value, float) and value != value:  # NaN: JSON has none
        return None
    return value


async def stream_from_thread(
    run: Callable[[threading.Event], None], pieces: Iterator[Any]
) -> AsyncGenerator[Any, None]:
    """Yield what ``pieces`` gives while ``run`` generates it in a thread of its own.

    ``run(stop)`` generates (``model.generate`` with a streamer that ``pieces`` reads)
    and must return soon after ``stop`` is set (a stopping criterion that checks it).
    Closing or cancelling the generator sets ``stop`` and waits for the thread, so
    generation never outlives its caller: a barge-in stops the model within one step.

    Raises:
        Exception: Whatever ``run`` raised.
    """
    stop = threading.Event()
    failure: list[BaseException] = []

    def target() -> None:
        try:
            run(stop)
        except BaseException as exc:  # handed to the Trio side below
            failure.append(exc)
        finally:
            end = getattr(pieces, "end", None)
            if failure and end is not None:
                end()  # a streamer whose generation failed would never end

    thread = threading.Thread(target=target, name="remotemedia-generate", daemon=True)
    thread.start()
    try:
        while True:
            piece = await trio.to_thread.run_sync(next, pieces, _DONE, abandon_on_cancel=True)
            if piece is _DONE:
                break
            yield piece
    finally:
        stop.set()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(thread.join)
    if failure:
        raise failure[0]


_DONE = object()

T = TypeVar("T")


class Handoff(Generic[T]):
    """What a generating thread hands to :func:`stream_from_thread`'s reader, in order.

    The thread ``put``s items and calls :meth:`end` once, also after a failure; the
    reader iterates, each ``next`` waiting for an item or the end. After the end every
    ``next`` ends.
    """

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def put(self, item: T) -> None:
        """Hand one item over."""
        self._queue.put(item)

    def end(self) -> None:
        """No more items."""
        self._queue.put(_ENDED)

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        item = self._queue.get()
        if item is _ENDED:
            self._queue.put(_ENDED)  # a later reader ends too
            raise StopIteration
        return item  # type: ignore[no-any-return]


_ENDED = object()


def stopping_when(stop: threading.Event) -> Any:
    """Stopping criteria for transformers' ``generate``: stop once ``stop`` is set.

    :func:`stream_from_thread` sets it when its reader goes away; ``generate`` then
    ends at its next step.
    """
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Stopped(StoppingCriteria):  # type: ignore[misc]  # transformers is untyped here
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
            return stop.is_set()

    return StoppingCriteriaList([Stopped()])
