"""``VibeVoiceNode`` (alias ``VibeVoiceTTSNode``): text to 24 kHz speech with VibeVoice-1.5B.

Runs transformers' ``VibeVoiceForConditionalGeneration`` in a worker process with a
Python environment of its own (torch, transformers 5.25 or newer, and diffusers for
the model's default noise scheduler, see :data:`VIBEVOICE_ENVIRONMENT`); the server
never imports any of them. The model is the converted checkpoint in transformers'
layout, ``vibevoice/VibeVoice-1.5B-hf``, in a local folder::

    hf download vibevoice/VibeVoice-1.5B-hf --local-dir models/VibeVoice-1.5B-hf

(The original ``microsoft/VibeVoice-1.5B`` folder is refused with a message saying so.)

Each text is cut into sentences; each sentence is generated on its own and yields
one Audio (mono, float32, 24 kHz) as soon as it is done, so the first sentence is
heard while the next ones are generated. Within a sentence there is no streaming:
transformers returns a sentence's waveform whole (the audio of each step exists only
inside its private ``_decode_audio_latent``). A caller that stops reading (a
barge-in) stops the model within one generation step, and no later sentence starts.

The voice: the processor has no named speakers or voice presets. A speaker is a
voice *sample*: ``voice`` names a WAV file of a few seconds of clean speech, which
the model imitates (voice cloning). Without one the model picks a voice by itself,
and it may pick another one for each sentence; ``seed`` makes that choice repeatable.

Not supported: ``microsoft/VibeVoice-Realtime-0.5B``, the streaming model the
original runtime used. Its code is not on PyPI (only in Microsoft's GitHub
repository, whose package pins transformers 4.51.3), its voice presets are pickles
that must be loaded with ``weights_only=False``, and its processor fetches a Qwen
tokenizer from the hub at run time; transformers has no class for it yet.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import re
import threading
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import trio

from remotemedia.environments import Environment
from remotemedia.errors import InvalidMediaError, ModelNotFoundError
from remotemedia.media import Audio, RuntimeData, Text
from remotemedia.nodes.base import Node
from remotemedia.nodes.transformers.loading import (
    DEVICES,
    DTYPES,
    TORCH_ENVIRONMENT,
    Handoff,
    model_config,
    model_source,
    mono_at,
    offline,
    resolve_device,
    resolve_dtype,
    stopping_when,
    stream_from_thread,
)
from remotemedia.nodes.tts.piper import MARKERS
from remotemedia.params import param
from remotemedia.wav import read_wav

__all__ = [
    "VIBEVOICE_ENVIRONMENT",
    "VibeVoiceNode",
    "VibeVoiceParams",
    "VibeVoiceTTSNode",
    "sentences",
]

VIBEVOICE_ENVIRONMENT = Environment(
    requirements=(
        *(r for r in TORCH_ENVIRONMENT.requirements if not r.startswith("transformers")),
        # VibeVoiceForConditionalGeneration is in 5.25 (older 5.x were not checked).
        "transformers>=5.25,<6",
        # The model's default noise scheduler is diffusers' DPMSolverMultistepScheduler.
        "diffusers>=0.35",
    )
)
"""The environment of :class:`VibeVoiceNode`: torch, transformers with VibeVoice, diffusers."""

CHECKPOINT = "vibevoice/VibeVoice-1.5B-hf"
GET_CHECKPOINT = f"`hf download {CHECKPOINT} --local-dir DIR`"
SPEAKER = "0"  # the chat template's role: the only speaker, whose voice sample we give

# A sentence ends at . ! or ? followed by a space, at their CJK forms, or at a line break.
_SENTENCE_END = re.compile("(?<=[.!?])\\s+|(?<=[\u3002\uff01\uff1f])\\s*|\n+")


@attrs.frozen
class VibeVoiceParams:
    """Parameters of :class:`VibeVoiceNode`."""

    model: str | None = param(
        None,
        doc=f"A local folder of the transformers VibeVoice checkpoint ({CHECKPOINT}).",
        server_path=True,
    )
    voice: str | None = param(
        None,
        doc="A WAV file of the voice to speak in (a few seconds of clean speech, any rate); "
        "none: the model picks a voice, maybe another one per sentence.",
        server_path=True,
    )
    cfg_scale: float = param(
        1.3, doc="Classifier-free guidance of the speech diffusion (1: none).", ge=0.0, le=10.0
    )
    diffusion_steps: int = param(
        10, doc="Denoising steps per speech token (fewer: faster, rougher).", ge=1, le=100
    )
    max_new_tokens: int = param(
        600,
        doc="Most speech tokens per sentence (7.5 a second of audio: 600 is 80 s).",
        ge=1,
        le=40_500,
    )
    seed: int | None = param(
        None,
        doc="Seed the model's noise before each sentence (the same text, the same speech); "
        "none: not seeded.",
        ge=0,
    )
    device: str = param("auto", doc="auto (CUDA when present, else CPU), cpu, cuda, cuda:N.")
    dtype: str = param("auto", doc="auto: bfloat16 on a GPU, float32 on the CPU.", choices=DTYPES)

    def __attrs_post_init__(self) -> None:
        if self.device.split(":", 1)[0] not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)} (or cuda:N)")


class VibeVoiceNode(Node[VibeVoiceParams]):
    """Speak text with VibeVoice-1.5B (transformers): one 24 kHz Audio per sentence."""

    node_type = "VibeVoiceNode"
    Params = VibeVoiceParams
    accepts = frozenset({"text"})
    produces = frozenset({"audio"})
    environment = VIBEVOICE_ENVIRONMENT
    # One thread per worker process for the model's own math: workers are many, cores few.
    worker_environment = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

    def __init__(self, node_id: str, params: VibeVoiceParams) -> None:
        super().__init__(node_id, params)
        self._model: Any = None
        self._processor: Any = None
        self._rate = 24_000
        self._voice: np.ndarray | None = None

    async def initialize(self) -> None:
        """Check the files, then load the model (in threads: it takes seconds)."""
        source, local, voice = await trio.to_thread.run_sync(self._files)
        await self.report_progress(f"loading VibeVoice model {source}")
        await trio.to_thread.run_sync(self._load, source, local, voice)

    def _files(self) -> tuple[str, bool, Audio | None]:
        """The model (folder or hub id, is it local) and the voice sample.

        Wrong ones fail here, at once, not after the long load.
        """
        params = self.params
        source, local = model_source(
            params.model, self.node_type, f"the transformers VibeVoice checkpoint {CHECKPOINT}"
        )
        if local:
            check_checkpoint(Path(source), self.node_type)
        if params.voice is None:
            return source, local, None
        voice = Path(params.voice).expanduser()
        if not voice.is_file():
            raise ModelNotFoundError(
                f"{self.node_type}: the voice sample {params.voice} does not exist; set "
                "params.voice to a WAV file of a few seconds of the voice to speak in."
            )
        try:
            sample = read_wav(voice)
        except InvalidMediaError as exc:
            raise ValueError(f"params.voice: {exc.args[0]} Give a WAV file.") from exc
        if sample.samples.size < sample.channels * sample.sample_rate // 10:
            raise ValueError(
                f"params.voice: {params.voice} holds less than 0.1 s of audio; give a few "
                "seconds of the voice to speak in."
            )
        return source, local, sample

    def _load(self, source: str, local: bool, voice: Audio | None) -> None:
        if local:
            offline()
        try:
            from transformers import AutoProcessor, VibeVoiceForConditionalGeneration
        except ImportError as exc:
            raise ModelNotFoundError(
                f"{self.node_type} needs torch and transformers 5.25 or newer (with VibeVoice) "
                f"in its environment: {exc}"
            ) from exc
        if importlib.util.find_spec("diffusers") is None:
            raise ModelNotFoundError(
                f"{self.node_type} needs diffusers in its environment (the model's noise "
                "scheduler); add diffusers>=0.35 to its requirements in --node-config."
            )
        device = resolve_device(self.params.device)
        self._processor = AutoProcessor.from_pretrained(source)
        model = VibeVoiceForConditionalGeneration.from_pretrained(
            source, dtype=resolve_dtype(self.params.dtype, device)
        )
        self._model = model.to(device).eval()
        self._rate = int(self._processor.feature_extractor.sampling_rate)
        if voice is not None:  # mono at the model's rate, once
            self._voice = mono_at(voice.samples, voice.channels, voice.sample_rate, self._rate)

    def logits_processors(self, config: Any, sentence: str) -> list[Any]:
        """Extra transformers ``LogitsProcessor`` objects for one sentence's generation.

        An extension point for subclasses, called once per sentence in the generating
        thread with the model's config; none here. The tests use it to make a tiny
        random model speak (a random model chooses to end at once).
        """
        return []

    async def process(self, data: RuntimeData) -> AsyncGenerator[RuntimeData, None]:
        """Speak the text; yield one Audio per sentence as soon as it is generated."""
        if not isinstance(data, Text) or data.channel not in ("", "tts"):
            # Display-only text and other kinds go on untouched, as with PiperTTSNode.
            yield data
            return
        if data.text.strip() in MARKERS:
            return
        parts = sentences(data.text)
        if not parts:
            return
        results = Handoff[np.ndarray | None]()
        generation = stream_from_thread(functools.partial(self._speak, parts, results), results)
        # Closed here, not whenever it is garbage-collected: a caller that stops reading
        # (closes this generator at its yield) must find the model stopped and its
        # thread gone when the close returns, before the next input uses the model.
        async with contextlib.aclosing(generation):
            async for samples in generation:
                if samples is None:
                    self.count("sentence_without_audio")
                    continue
                yield Audio.adopt(samples, self._rate)

    def _speak(
        self, parts: list[str], results: Handoff[np.ndarray | None], stop: threading.Event
    ) -> None:
        """Generate each sentence in turn (in the generating thread) until ``stop``."""
        try:
            for sentence in parts:
                if stop.is_set():
                    return
                results.put(self._synthesize(sentence, stop))
        finally:
            results.end()

    def _synthesize(self, sentence: str, stop: threading.Event) -> np.ndarray | None:
        """One sentence's speech (None: the model said nothing); ends early on ``stop``."""
        import torch
        from transformers import LogitsProcessorList

        params, model = self.params, self._model
        inputs = self._inputs(sentence).to(model.device, model.dtype)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        with torch.inference_mode():
            audio = model.generate(
                **inputs,
                logits_processor=LogitsProcessorList(
                    self.logits_processors(model.config, sentence)
                ),
                stopping_criteria=stopping_when(stop),
                max_new_tokens=params.max_new_tokens,
                guidance_scale=params.cfg_scale,
                num_diffusion_steps=params.diffusion_steps,
                return_dict_in_generate=False,  # the waveforms, one per batch item
            )
        waveform = audio[0]
        if waveform is None:
            return None
        samples = np.asarray(waveform.detach().to("cpu", torch.float32).numpy(), np.float32)
        # Audio is nominally in [-1, 1]; the decoder's output has no bound.
        clipped: np.ndarray = np.clip(samples.reshape(-1), -1.0, 1.0)
        return clipped

    def _inputs(self, sentence: str) -> Any:
        """The model's inputs for one sentence: the chat template, with the voice sample."""
        processor = self._processor
        content: list[dict[str, str]] = [{"type": "text", "text": sentence}]
        if self._voice is None:
            prompt = processor.apply_chat_template(
                [{"role": SPEAKER, "content": content}], tokenize=False
            )
            return processor(text=prompt, return_tensors="pt")
        # The template only marks where the sample goes; the processor itself takes the
        # samples (apply_chat_template would load them from a path or URL, per call).
        content.append({"type": "audio"})
        prompt = processor.apply_chat_template(
            [{"role": SPEAKER, "content": content}], tokenize=False
        )
        return processor(
            text=prompt, audio=[self._voice], sampling_rate=self._rate, return_tensors="pt"
        )

    async def cleanup(self) -> None:
        """Drop the model."""
        self._model = None
        self._processor = None


class VibeVoiceTTSNode(VibeVoiceNode):
    """The original runtime's name of VibeVoiceNode."""

    node_type = "VibeVoiceTTSNode"


def sentences(text: str) -> list[str]:
    """The sentences of ``text``, each to be spoken on its own.

    Pieces without a letter or digit (stray punctuation) are dropped.
    """
    parts = (part.strip() for part in _SENTENCE_END.split(text))
    return [part for part in parts if any(ch.isalnum() for ch in part)]


def check_checkpoint(folder: Path, node: str) -> None:
    """Refuse a folder that is not a transformers VibeVoice checkpoint, saying what it is.

    Reads only ``config.json`` (no torch), so a wrong folder fails at once.

    Raises:
        ModelNotFoundError: The folder is another model, the original (unconverted)
            checkpoint, or the Realtime streaming model.
    """
    config = model_config(
        folder, node, f"it should hold the transformers VibeVoice checkpoint: {GET_CHECKPOINT}"
    )
    model_type = str(config.get("model_type", ""))
    if model_type == "vibevoice_streaming":
        raise ModelNotFoundError(
            f"{node}: {folder} is VibeVoice-Realtime, which transformers cannot run (its "
            f"code is only in Microsoft's repository); use {CHECKPOINT}: {GET_CHECKPOINT}."
        )
    if model_type != "vibevoice":
        raise ModelNotFoundError(
            f"{node}: {folder} holds a {model_type or 'model of no model_type'}, not VibeVoice; "
            f"set params.model to the transformers VibeVoice checkpoint: {GET_CHECKPOINT}."
        )
    if "text_config" not in config:
        raise ModelNotFoundError(
            f"{node}: {folder} is the original VibeVoice checkpoint (microsoft/VibeVoice-1.5B), "
            f"not the transformers one it is converted to; use {CHECKPOINT}: {GET_CHECKPOINT}."
        )
