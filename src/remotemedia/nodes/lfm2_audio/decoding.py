"""Decoding LFM2-Audio's output in the worker: text pieces, and audio chunk by chunk.

What :mod:`remotemedia.nodes.lfm2_audio.node` runs on liquid-audio's objects (in the
worker, whose environment has liquid-audio and torch; imported there only): Mimi's
streaming decode (LFM2-Audio-1.5B), the LFM2.5 detokenizer decoded in overlapping
chunks, text pieces once their characters are whole, and the mends liquid-audio 1.3.0
needs on a CPU.
"""

from __future__ import annotations

import contextlib
import importlib
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np

__all__ = [
    "AUDIO_START_ID",
    "END_OF_AUDIO",
    "FRAME_SAMPLES",
    "IM_END_ID",
    "INPUT_RATE",
    "MIMI_FILE",
    "OUTPUT_RATE",
    "TEXT_END_ID",
    "Decode",
    "Detokenized",
    "TextDecoder",
    "detokenizer",
    "detokenizer_stream",
    "mimi_stream",
    "patch_liquid_audio",
    "samples",
]

INPUT_RATE = 16_000  # ChatState.add_audio resamples to it: hand it that, it has nothing to do
OUTPUT_RATE = 24_000  # Mimi's and the LFM2.5 detokenizer's
FRAME_SAMPLES = 1_920  # one audio frame: 80 ms at 24 kHz
IM_END_ID, AUDIO_START_ID, TEXT_END_ID = 7, 128, 130  # hard-coded in liquid-audio
END_OF_AUDIO = 2048  # the audio code ending a run of audio frames
MIMI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"  # where liquid-audio looks
DETOKENIZER_CONTEXT = 8  # frames decoded again before new ones (its attention sees 5)
DETOKENIZER_HOLD = 480  # samples of a decode's end still missing the next frames' part

Decode: TypeAlias = Callable[[list[Any]], np.ndarray]
"""Audio frames (8 codes each) to mono float32 samples at 24 kHz, going on from the last
call; no frames: what the decoder held back (at the end of speech)."""


def patch_liquid_audio() -> None:
    """Mend liquid-audio 1.3.0 where it would stop this node (in the worker, at load).

    ``conformer/encoder.py`` uses ``math`` (with ``xscaling``) without importing it; and
    transformers warns about the argument liquid-audio calls LFM2 with.
    """
    import math

    from liquid_audio.model.conformer import encoder

    if not hasattr(encoder, "math"):
        encoder.math = math
    warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)


def detokenizer(folder: Path, device: str) -> Any:
    """The LFM2.5 audio detokenizer, built as liquid-audio does but on ``device``."""
    from liquid_audio import LFM2AudioDetokenizer
    from transformers import Lfm2Config

    load_file = importlib.import_module("safetensors.torch").load_file
    path = folder / "audio_detokenizer"
    config = Lfm2Config.from_pretrained(path / "config.json")
    # llama.cpp's name; the detokenizer masks its attention to the window itself.
    config.layer_types = [
        "full_attention" if kind == "sliding_attention" else kind for kind in config.layer_types
    ]
    detokenizer = LFM2AudioDetokenizer(config).eval()
    detokenizer.load_state_dict(load_file(path / "model.safetensors"))
    return detokenizer.to(device)


@contextlib.contextmanager
def mimi_stream(mimi: Any) -> Iterator[Decode]:
    """Decode a reply's frames with Mimi, whose streaming state goes on between calls."""
    import torch

    def decode(frames: list[Any]) -> np.ndarray:
        if not frames:
            return np.zeros(0, np.float32)  # Mimi holds nothing back
        return samples(mimi.decode(torch.stack(frames, 1)[None]))  # codes [1, 8, frames]

    with mimi.streaming(1):
        yield decode


@contextlib.contextmanager
def detokenizer_stream(processor: Any) -> Iterator[Decode]:
    """Decode a reply's frames with the LFM2.5 detokenizer (see :class:`Detokenized`)."""
    yield Detokenized(processor)


class Detokenized:
    """The LFM2.5 detokenizer, which keeps no state, decoding a reply chunk by chunk.

    Each call decodes its frames after the last :data:`DETOKENIZER_CONTEXT` frames of
    the calls before (its attention's window), and returns the new samples but the
    last :data:`DETOKENIZER_HOLD`, to which the next frames' inverse STFT windows still
    add: the next call returns them, or a call with no frames (the end of speech).
    """

    def __init__(self, processor: Any) -> None:
        self._processor = processor
        self._before: list[Any] = []
        self._held = np.zeros(0, np.float32)

    def __call__(self, frames: list[Any]) -> np.ndarray:
        """The samples ``frames`` complete (no frames: the samples held back)."""
        import torch

        if not frames:
            held, self._held = self._held, np.zeros(0, np.float32)
            return held
        codes = torch.stack([*self._before, *frames], 1)[None]
        decoded = samples(self._processor.decode(codes))
        start = len(self._before) * FRAME_SAMPLES - self._held.size
        end = decoded.size - DETOKENIZER_HOLD
        self._held = decoded[end:]
        self._before = [*self._before, *frames][-DETOKENIZER_CONTEXT:]
        return decoded[start:end]


def samples(waveform: Any) -> np.ndarray:
    """A decoder's waveform tensor as mono float32 samples in [-1, 1]."""
    import torch

    samples = waveform.detach().to("cpu", torch.float32).numpy().reshape(-1)
    # Audio is nominally in [-1, 1]; a decoder's output has no bound.
    clipped: np.ndarray = np.clip(samples, -1.0, 1.0)
    return clipped


class TextDecoder:
    """A reply's text ids to new text, each piece once its characters are whole."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._sent = ""

    def add(self, token: int) -> str:
        """The new text ``token`` completes ("" while a character is still partial)."""
        if token in (IM_END_ID, AUDIO_START_ID, TEXT_END_ID):
            return ""
        self._ids.append(token)
        text = str(self._tokenizer.decode(self._ids, skip_special_tokens=True))
        if text.endswith("\ufffd"):  # a character cut between tokens: wait for the rest
            return ""
        piece, self._sent = text[len(self._sent) :], text
        return piece
