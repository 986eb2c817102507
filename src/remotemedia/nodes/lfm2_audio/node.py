"""``LFM2AudioNode`` (alias ``LFM2Node``): a spoken conversation with Liquid AI's LFM2-Audio.

Runs ``liquid-audio`` (Liquid AI's package for LFM2-Audio-1.5B and LFM2.5-Audio-1.5B)
in a worker process with a Python environment of its own (Python 3.12 or newer,
torch, transformers: :data:`LIQUID_AUDIO_ENVIRONMENT`); the server never imports any
of them. The model is a local folder, downloaded once::

    hf download LiquidAI/LFM2-Audio-1.5B --local-dir models/LFM2-Audio-1.5B

The node keeps one conversation per session. Each input is a user turn: Audio (any
rate and channels; mixed to mono at the model's 16 kHz), or Text (or Json
``{"text": ...}``). The reply streams as the model generates it:

- Text: each piece of the reply's text as soon as it decodes (``<|...|>`` tokens left out).
- Audio: mono float32 at 24 kHz, a chunk every ``decode_frames`` audio frames (80 ms
  each) and whatever is left when the reply turns to text or ends.
- Then the original runtime's end markers, Text ``<|text_end|>`` (after a reply with
  text) and ``<|audio_end|>`` (after one with audio), which text-to-speech nodes skip;
  and a Json status ``{"final": true, "text": reply, "audio_seconds": s, "turns": n,
  "context_tokens": c}``: ``n`` user turns in the conversation so far, ``c`` the length
  of what the model is given (text tokens, audio embeddings, audio frames).

The reply joins the conversation once it ends; a reply cut short (the session stopped
reading it: a barge-in) joins it as far as it went, and its generation stops within
one step of the model (and one audio decode); a turn that fails leaves the
conversation as it was. The conversation lives in the worker: a worker replaced
(after a crash, or over ``--worker-max-rss-mb``) starts a new one.

Commands, as Json or as a Control of that kind (other Control messages are ignored),
each answered with a Json status as above, without ``final``:

- ``{"reset": true}``: forget the conversation.
- ``{"system_prompt": "..."}``: start a new conversation with this system prompt (it
  is the conversation's first turn, so the history goes with it).
- ``{"barge_in": true}``: nothing to do (the session has cut the reply already).

``mode`` picks the task as Liquid AI's examples do: ``asr`` (speech to text, sequential
generation, "Perform ASR."), ``tts`` (text to speech, sequential, "Perform TTS. Use the
UK male voice."), ``interleaved`` (speech or text to speech and text, "Respond with
interleaved text and audio.").

Where liquid-audio 1.3.0 would fail, and what the node does instead:

- A model folder given as a ``str`` is taken for a hub id: the node passes a ``Path``.
- It loads for CUDA and bfloat16 unless told: the node gives the device, and float32
  on the CPU, also for the conversation's audio features.
- It builds the LFM2.5 audio detokenizer with ``.cuda()``: the node builds it on the
  model's device. Mimi (LFM2-Audio-1.5B) is used when the folder has its weights.
- ``conformer/encoder.py`` uses ``math`` without importing it (an encoder with
  ``xscaling`` fails): the node adds it before loading.
- It calls transformers' LFM2 with ``past_key_values``, which transformers 5 deprecates
  (a FutureWarning, silenced in the worker) and 5.40 drops: the environment keeps
  transformers below 5.40.

On a CPU expect the 1.5B model to be slow (not measured here: no weights offline);
Liquid AI point CPU users at its GGUF build for llama.cpp, which this node does not run.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import AsyncGenerator, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import trio

from remotemedia.environments import Environment
from remotemedia.errors import ModelNotFoundError
from remotemedia.media import Audio, Control, Json, RuntimeData, Text
from remotemedia.nodes.base import Node
from remotemedia.nodes.lfm2_audio.decoding import (
    END_OF_AUDIO,
    IM_END_ID,
    INPUT_RATE,
    MIMI_FILE,
    OUTPUT_RATE,
    Decode,
    TextDecoder,
    detokenizer,
    detokenizer_stream,
    mimi_stream,
    patch_liquid_audio,
)
from remotemedia.nodes.transformers.loading import (
    DEVICES,
    DTYPES,
    Handoff,
    model_config,
    model_source,
    mono_at,
    offline,
    resolve_device,
    resolve_dtype,
    stream_from_thread,
)
from remotemedia.nodes.tts.piper import MARKERS
from remotemedia.params import param

__all__ = ["LIQUID_AUDIO_ENVIRONMENT", "LFM2AudioNode", "LFM2AudioParams", "LFM2Node"]

LIQUID_AUDIO_ENVIRONMENT = Environment(
    python=">=3.12",  # liquid-audio is written for 3.12
    requirements=("liquid-audio==1.3.0", "transformers>=4.55.4,<5.40"),
)
"""The environment of :class:`LFM2AudioNode`: liquid-audio and what it pulls (torch,
torchaudio, transformers: about 6 GB with PyPI's CUDA build of torch)."""

MODES = ("asr", "tts", "interleaved")
SYSTEM_PROMPTS = {
    "asr": "Perform ASR.",
    "tts": "Perform TTS. Use the {voice} voice.",
    "interleaved": "Respond with interleaved text and audio.",
}
# Audio sampling per mode, as in Liquid AI's examples: (temperature, top-k).
AUDIO_SAMPLING = {"asr": (None, None), "tts": (0.8, 64), "interleaved": (1.0, 4)}
COMMANDS = frozenset({"reset", "system_prompt", "barge_in"})
TEXT_END, AUDIO_END = "<|text_end|>", "<|audio_end|>"

MODEL = "an LFM2-Audio model (e.g. LiquidAI/LFM2-Audio-1.5B)"


@attrs.frozen
class LFM2AudioParams:
    """Parameters of :class:`LFM2AudioNode`."""

    model: str | None = param(
        None,
        doc="A local folder of LFM2-Audio-1.5B or LFM2.5-Audio-1.5B (`hf download` it once).",
        server_path=True,
    )
    mode: str = param(
        "interleaved",
        doc="asr: speech to text; tts: text to speech; interleaved: a spoken conversation.",
        choices=MODES,
    )
    system_prompt: str | None = param(
        None, doc="The conversation's system prompt; none: the mode's (it picks the task)."
    )
    voice: str = param(
        "UK male", doc="tts's default prompt: US male, US female, UK male or UK female."
    )
    max_new_tokens: int = param(
        512, doc="Longest reply in tokens (a text token, or an 80 ms audio frame).", ge=1, le=8192
    )
    text_temperature: float = param(
        0.0, doc="Sampling temperature of text; 0: always the likeliest token.", ge=0.0, le=2.0
    )
    audio_temperature: float | None = param(
        None,
        doc="Sampling temperature of audio; none: the mode's (tts 0.8, else 1.0); 0: greedy.",
        ge=0.0,
        le=2.0,
    )
    audio_top_k: int | None = param(
        None, doc="Audio codes sampled from; none: the mode's (tts 64, else 4).", ge=1, le=2048
    )
    decode_frames: int = param(
        5, doc="Audio frames (80 ms each) decoded and sent together.", ge=1, le=100
    )
    threads: int = param(
        0, doc="Threads for the model's math; 0: torch's default (one per core).", ge=0, le=1024
    )
    device: str = param("auto", doc="auto (CUDA when present, else CPU), cpu, cuda, cuda:N.")
    dtype: str = param("auto", doc="auto: bfloat16 on a GPU, float32 on the CPU.", choices=DTYPES)

    def __attrs_post_init__(self) -> None:
        if self.device.split(":", 1)[0] not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)} (or cuda:N)")

    def prompt(self) -> str:
        """The system prompt: the one given, else the mode's."""
        if self.system_prompt is not None:
            return self.system_prompt
        return SYSTEM_PROMPTS[self.mode].format(voice=self.voice)


class LFM2AudioNode(Node[LFM2AudioParams]):
    """Converse with LFM2-Audio: speech or text in, streamed speech and text out.

    Attributes:
        turns: User turns in the conversation so far (0 after a reset).
    """

    node_type = "LFM2AudioNode"
    Params = LFM2AudioParams
    accepts = frozenset({"audio", "text", "json", "control"})
    produces = frozenset({"audio", "text", "json"})
    environment = LIQUID_AUDIO_ENVIRONMENT
    # Unlike the small model nodes, not one thread: a 1.5B model on one core is far
    # slower than speech (`threads` bounds it).
    worker_environment = {"TOKENIZERS_PARALLELISM": "false"}

    def __init__(self, node_id: str, params: LFM2AudioParams) -> None:
        super().__init__(node_id, params)
        self._model: Any = None
        self._processor: Any = None
        self._speech: Callable[[], contextlib.AbstractContextManager[Decode]] | None = None
        self._chat: Any = None  # the conversation (a liquid_audio ChatState), made on first use
        self._system_prompt = params.prompt()
        self.turns = 0

    async def initialize(self) -> None:
        """Load the processor, the model and its audio decoder (in a thread: seconds)."""
        source, local = model_source(self.params.model, self.node_type, MODEL)
        if not local:
            raise ModelNotFoundError(
                f"{self.node_type}: {source} is not a folder here; download the model once "
                f"(`hf download {source} --local-dir DIR`) and set params.model to DIR."
            )
        folder = Path(source)  # as a str, liquid-audio takes it for a hub id
        check_folder(folder, self.node_type)
        await self.report_progress(f"loading LFM2-Audio model {folder}")
        await trio.to_thread.run_sync(self._load, folder)

    def _load(self, folder: Path) -> None:
        offline()
        try:
            import torch
            from liquid_audio import LFM2AudioModel, LFM2AudioProcessor
        except ImportError as exc:
            raise ModelNotFoundError(
                f"{self.node_type} needs liquid-audio (on Python 3.12 or newer) in its "
                f"environment: {exc}"
            ) from exc
        patch_liquid_audio()
        params = self.params
        if params.threads:
            torch.set_num_threads(params.threads)
        device = resolve_device(params.device)
        dtype = resolve_dtype(params.dtype, device)
        self._processor = LFM2AudioProcessor.from_pretrained(folder, device=device).eval()
        self._model = LFM2AudioModel.from_pretrained(folder, device=device, dtype=dtype).eval()
        if (folder / MIMI_FILE).is_file():
            mimi = self._processor.mimi.eval()  # loaded now, not at the first reply
            with mimi_stream(mimi) as decode:  # and warmed up: its first decode is slow
                decode([torch.zeros(self._model.codebooks, dtype=torch.long, device=device)])
            self._speech = functools.partial(mimi_stream, mimi)
        else:  # LFM2.5: its own detokenizer, which liquid-audio would put on CUDA
            self._processor._audio_detokenizer = detokenizer(folder, device)
            self._speech = functools.partial(detokenizer_stream, self._processor)

    async def process(self, data: RuntimeData) -> AsyncGenerator[RuntimeData, None]:
        """Answer one user turn, streaming the reply; or carry out a command."""
        if isinstance(data, Control) and data.kind not in COMMANDS:
            return  # another node's control message (cancel_speculation, ...)
        command = _command(data)
        if command is not None:
            yield Json({**self._obey(command), **self.status()})
            return
        turn = self._turn(data)
        if turn is None:
            return
        reply = _Reply()
        generation = stream_from_thread(functools.partial(self._respond, turn, reply), reply)
        # Closed with this generator, not when collected: its thread stops at once.
        async with contextlib.aclosing(generation) as items:
            async for item in items:
                yield item
        self.count("reply")
        if reply.text:
            yield Text(TEXT_END)
        if reply.audio_samples:
            yield Text(AUDIO_END)
        yield Json(
            {
                "final": True,
                "text": reply.text,
                "audio_seconds": reply.audio_samples / OUTPUT_RATE,
                **self.status(),
            }
        )

    def status(self) -> dict[str, int]:
        """The conversation's size: user turns, and the length of what the model is given."""
        context = int(self._chat.modality_flag.shape[1]) if self._chat is not None else 0
        return {"turns": self.turns, "context_tokens": context}

    def _obey(self, command: Mapping[str, Any]) -> dict[str, Any]:
        """Carry out a command; what it asked, for the answer."""
        prompt = command.get("system_prompt")
        if prompt is not None:
            if not isinstance(prompt, str):
                raise ValueError("system_prompt must be a text, such as 'Perform ASR.'")
            self._system_prompt = prompt
        if command.get("reset") is True or prompt is not None:
            self._chat = None
            self.turns = 0
            self.count("conversation_reset")
        return dict(command)

    def _turn(self, data: RuntimeData) -> tuple[str, Any] | None:
        """The user's turn: ``("audio", mono samples)`` or ``("text", text)``; None: empty."""
        if isinstance(data, Audio):
            if data.num_frames == 0:
                return None
            return "audio", mono_at(data.samples, data.channels, data.sample_rate, INPUT_RATE)
        text = data.text if isinstance(data, Text) else None
        if isinstance(data, Json) and isinstance(data.value, Mapping):
            text = data.value.get("text")
        if not isinstance(text, str):
            raise TypeError(
                f"{self.node_type} takes audio, text, or JSON with 'text', 'reset' or "
                f"'system_prompt'; got {_described(data)}"
            )
        if not text.strip() or text.strip() in MARKERS:
            return None  # nothing said, or another model's end marker
        return "text", text

    def _respond(self, turn: tuple[str, Any], reply: _Reply, stop: threading.Event) -> None:
        """Add the user's turn, then generate the reply into ``reply`` until done or ``stop``.

        A reply cut short joins the conversation as far as it went (what the user heard
        is what was said); a turn that fails leaves the conversation as it was.
        """
        import torch

        try:
            with torch.no_grad():
                chat = self._chat if self._chat is not None else self._new_chat()
                before = {name: chat[name] for name in chat}  # its tensors are never changed
                try:
                    chat.new_turn("user")
                    kind, value = turn
                    if kind == "audio":
                        # A copy: the input's samples are read-only, shared with other nodes.
                        chat.add_audio(torch.tensor(value)[None], INPUT_RATE)
                    else:
                        chat.add_text(value)
                    chat.end_turn()
                    chat.new_turn("assistant")
                    self._generate(chat, reply, stop)
                    reply.join(chat)
                except BaseException:
                    for name, tensor in before.items():
                        setattr(chat, name, tensor)
                    raise
                self.turns += 1
        finally:
            reply.end()

    def _new_chat(self) -> Any:
        from liquid_audio import ChatState

        # Its features' dtype defaults to bfloat16, whatever the model's.
        dtype = next(self._model.parameters()).dtype
        chat = ChatState(self._processor, dtype=dtype)
        chat.new_turn("system")
        chat.add_text(self._system_prompt)
        chat.end_turn()
        self._chat = chat
        return chat

    def _generate(self, chat: Any, reply: _Reply, stop: threading.Event) -> None:
        params, model = self.params, self._model
        temperature, top_k = AUDIO_SAMPLING[params.mode]
        if params.audio_temperature is not None:
            temperature = params.audio_temperature
        interleaved = params.mode == "interleaved"
        generate = model.generate_interleaved if interleaved else model.generate_sequential
        tokens = generate(
            **chat,
            max_new_tokens=params.max_new_tokens,
            text_temperature=float(params.text_temperature) or None,  # None: greedy
            audio_temperature=float(temperature) if temperature else None,
            audio_top_k=params.audio_top_k or top_k,
        )
        text = TextDecoder(self._processor.text)
        pending: list[Any] = []  # audio frames not decoded yet
        assert self._speech is not None
        with contextlib.closing(tokens), self._speech() as decode:

            def speak(end: bool) -> None:
                """Decode the pending frames; at the ``end`` of speech, also what is held back."""
                parts = [decode(pending)] if pending else []
                if end:
                    parts.append(decode([]))
                pending.clear()
                if parts:
                    reply.put_audio(np.concatenate(parts))

            for token in tokens:
                reply.keep(token)
                audio, ended = token.numel() > 1, int(token[0]) == END_OF_AUDIO
                # The end code anywhere in a frame: no sound (liquid-audio's demo skips
                # such frames too); only in the first codebook does it end the speech.
                if audio and not bool((token == END_OF_AUDIO).any()):
                    pending.append(reply.frames[-1])
                # Decoded before any text that follows, so that outputs keep the reply's order.
                if ended or not audio or len(pending) >= params.decode_frames:
                    speak(end=ended)
                if not audio:
                    reply.put_text(text.add(int(token)))
                if stop.is_set():
                    return  # cut: frames not decoded yet are dropped, at once
            speak(end=True)

    async def cleanup(self) -> None:
        """Drop the model and the conversation."""
        self._model = self._processor = self._chat = self._speech = None


class LFM2Node(LFM2AudioNode):
    """The original runtime's name of LFM2AudioNode."""

    node_type = "LFM2Node"


def check_folder(folder: Path, node: str) -> None:
    """Refuse a folder that is not an LFM2-Audio model, saying what is missing.

    Reads only ``config.json`` (no torch), so a wrong folder fails at once.

    Raises:
        ModelNotFoundError: No config, not LFM2-Audio's, or no audio decoder.
    """
    config = model_config(folder, node, f"set params.model to a folder of {MODEL}")
    if not {"lfm", "encoder", "depthformer"} <= config.keys():
        raise ModelNotFoundError(
            f"{node}: {folder} is not an LFM2-Audio model (its config.json has no lfm, "
            f"encoder and depthformer); set params.model to a folder of {MODEL}."
        )
    if not (folder / MIMI_FILE).is_file() and not (folder / "audio_detokenizer").is_dir():
        raise ModelNotFoundError(
            f"{node}: {folder} has neither Mimi's weights ({MIMI_FILE}) nor an "
            "audio_detokenizer folder, so its speech cannot be decoded; download the "
            "whole model folder."
        )


class _Reply(Handoff[RuntimeData]):
    """One reply as it is generated: its tokens, and its outputs for the Trio side.

    Written by the generating thread; read by ``next`` (in a thread of its own) until
    :meth:`end`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.text_ids: list[int] = []
        self.frames: list[Any] = []
        self.modality: list[bool] = []  # per kept token, in order: is it audio
        self.text = ""
        self.audio_samples = 0

    def keep(self, token: Any) -> None:
        """Keep a generated token (a text id or an audio frame) for the conversation."""
        if token.numel() > 1:
            self.frames.append(token.clone())
            self.modality.append(True)
        elif int(token) != IM_END_ID:  # ChatState.end_turn adds it
            self.text_ids.append(int(token))
            self.modality.append(False)

    def join(self, chat: Any) -> None:
        """Add the reply's tokens to the conversation, and end its turn."""
        import torch
        from liquid_audio import LFMModality

        if self.frames:
            frames = torch.stack(self.frames, 1)
        else:
            frames = torch.empty((chat.codebooks, 0), dtype=torch.long)
        flags = [LFMModality.AUDIO_OUT if audio else LFMModality.TEXT for audio in self.modality]
        chat.append(
            text=torch.tensor([self.text_ids], dtype=torch.long),
            audio_out=frames,
            modality_flag=torch.tensor([flags], dtype=torch.long),
        )
        chat.end_turn()

    def put_text(self, piece: str) -> None:
        if piece:
            self.text += piece
            self.put(Text(piece))

    def put_audio(self, samples: np.ndarray) -> None:
        if samples.size:
            self.audio_samples += int(samples.size)
            self.put(Audio.adopt(samples, OUTPUT_RATE))


def _command(data: RuntimeData) -> dict[str, Any] | None:
    """The command ``data`` carries (reset, system_prompt, barge_in), if it is one.

    Raises:
        ValueError: A Json command with keys that are not commands.
    """
    if isinstance(data, Control):
        if data.kind == "system_prompt":
            fields = data.fields
            return {"system_prompt": fields.get("system_prompt", fields.get("text"))}
        return {data.kind: True}
    if not (isinstance(data, Json) and isinstance(data.value, Mapping)):
        return None
    if not COMMANDS & data.value.keys():
        return None
    unknown = sorted(key for key in data.value if key not in COMMANDS)
    if unknown:
        raise ValueError(
            f"a command takes only the keys {', '.join(sorted(COMMANDS))}; send "
            f"{', '.join(unknown)} on its own"
        )
    return dict(data.value)


def _described(data: RuntimeData) -> str:
    if isinstance(data, Json) and isinstance(data.value, Mapping):
        return f"JSON with the keys {', '.join(sorted(data.value)) or 'none'}"
    return type(data).__name__
