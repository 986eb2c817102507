"""``LFM2TextNode``: chat with Liquid AI's LFM2 on transformers, streaming the reply.

Runs in a worker process with the transformers environment (``Lfm2ForCausalLM`` is
in transformers since 4.54). Each input is a user turn; the reply streams as Json
``{"text": piece, "interim": true}`` per piece as the model generates it, then
``{"text": reply, "final": true, "pieces": n, "stopped": false, "history_turns": h}``
(``h``: the earlier exchanges the model was given). The node keeps the
conversation (a history per session, the last ``history_turns`` exchanges); a reply
cut short (the session stopped reading it: a barge-in) is kept as far as it went.

Inputs:

- Text: the user's turn.
- Json ``{"text": ..., "history": [{"user": ..., "reply": ...}, ...]}``: a turn with
  the history given by the caller instead of the node's own (the conversation
  coordinator does this: it knows how much of each reply was actually spoken).
- Json ``{"reset": true}``: forget the conversation (answers ``{"reset": true}``).
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import attrs
import trio

from remotemedia.errors import ModelNotFoundError
from remotemedia.media import Json, RuntimeData, Text
from remotemedia.nodes.base import Node
from remotemedia.nodes.transformers.loading import (
    DEVICES,
    DTYPES,
    TORCH_ENVIRONMENT,
    model_source,
    offline,
    resolve_device,
    resolve_dtype,
    stopping_when,
    stream_from_thread,
)
from remotemedia.params import param

__all__ = ["LFM2TextNode", "LFM2TextParams"]

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful voice assistant. Answer in one or two short spoken sentences, "
    "without lists or markdown."
)


@attrs.frozen
class LFM2TextParams:
    """Parameters of :class:`LFM2TextNode`."""

    model: str | None = param(
        None,
        doc="A local folder of an LFM2 chat model (e.g. LiquidAI/LFM2-350M, downloaded once).",
        server_path=True,
    )
    system_prompt: str = param(DEFAULT_SYSTEM_PROMPT, doc="The system message of every turn.")
    max_new_tokens: int = param(256, doc="Longest reply, in tokens.", ge=1, le=8192)
    temperature: float = param(
        0.3, doc="Sampling temperature; 0: always the likeliest token.", ge=0.0, le=2.0
    )
    history_turns: int = param(10, doc="Earlier exchanges kept and given to the model.", ge=0)
    device: str = param("auto", doc="auto (CUDA when present, else CPU), cpu, cuda, cuda:N.")
    dtype: str = param("auto", doc="auto: bfloat16 on a GPU, float32 on the CPU.", choices=DTYPES)

    def __attrs_post_init__(self) -> None:
        if self.device.split(":", 1)[0] not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)} (or cuda:N)")


class LFM2TextNode(Node[LFM2TextParams]):
    """Chat with an LFM2 model: each text is a user turn, the reply streams in pieces."""

    node_type = "LFM2TextNode"
    Params = LFM2TextParams
    accepts = frozenset({"text", "json"})
    produces = frozenset({"json"})
    environment = TORCH_ENVIRONMENT
    worker_environment = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

    def __init__(self, node_id: str, params: LFM2TextParams) -> None:
        super().__init__(node_id, params)
        self._model: Any = None
        self._tokenizer: Any = None
        self.history: deque[tuple[str, str]] = deque(maxlen=params.history_turns)

    async def initialize(self) -> None:
        """Load the tokenizer and the model (in a thread: it takes seconds)."""
        source, local = model_source(self.params.model, self.node_type, "an LFM2 chat model")
        await self.report_progress(f"loading LFM2 model {source}")
        await trio.to_thread.run_sync(self._load, source, local)

    def _load(self, source: str, local: bool) -> None:
        if local:
            offline()
        try:
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise ModelNotFoundError(
                f"{self.node_type} needs transformers and torch in its environment: {exc}"
            ) from exc
        device = resolve_device(self.params.device)
        self._tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=resolve_dtype(self.params.dtype, device)
        )
        self._model = model.to(device).eval()

    async def process(self, data: RuntimeData) -> AsyncGenerator[RuntimeData, None]:
        """Answer one user turn, streaming the reply."""
        user, history = self._turn(data)
        if user is None:
            self.history.clear()
            yield Json({"reset": True})
            return
        pieces: list[str] = []
        stopped = True
        try:
            # Closed with this generator, at once: that is what stops the model's thread.
            async with contextlib.aclosing(self._generate(user, history)) as generated:
                async for piece in generated:
                    if piece:
                        pieces.append(piece)
                        yield Json({"text": piece, "interim": True})
            stopped = False
        finally:
            # Kept as far as it went: what the user heard of a cut reply is what was said.
            self.history.append((user, "".join(pieces)))
        yield Json(
            {
                "text": "".join(pieces),
                "final": True,
                "pieces": len(pieces),
                "stopped": stopped,
                "history_turns": min(len(history), self.params.history_turns),
            }
        )

    def _turn(self, data: RuntimeData) -> tuple[str | None, Sequence[tuple[str, str]]]:
        """The user's words and the history to answer them with (None: a reset)."""
        if isinstance(data, Text):
            return data.text, list(self.history)
        if isinstance(data, Json) and isinstance(data.value, Mapping):
            value = data.value
            if value.get("reset") is True:
                return None, ()
            text = value.get("text")
            if isinstance(text, str):
                given = value.get("history")
                if given is None:
                    return text, list(self.history)
                return text, _history(given)
        raise ValueError(
            f"{self.node_type} takes a text, or JSON with 'text' (and 'history') or "
            f"'reset'; got {type(data).__name__}"
        )

    def _messages(self, user: str, history: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
        messages = [{"role": "system", "content": self.params.system_prompt}]
        keep = self.params.history_turns
        for said, replied in list(history)[-keep:] if keep else []:
            messages.append({"role": "user", "content": said})
            messages.append({"role": "assistant", "content": replied})
        messages.append({"role": "user", "content": user})
        return messages

    def _generate(self, user: str, history: Sequence[tuple[str, str]]) -> AsyncGenerator[str, None]:
        from transformers import TextIteratorStreamer

        tokenizer, model, params = self._tokenizer, self._model, self.params
        inputs = tokenizer.apply_chat_template(
            self._messages(user, history),
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        ).to(model.device)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)

        sampling: dict[str, Any] = {"do_sample": False}
        if params.temperature > 0:
            sampling = {"do_sample": True, "temperature": params.temperature}

        def run(stop: threading.Event) -> None:
            import torch

            with torch.inference_mode():
                model.generate(
                    **inputs,
                    streamer=streamer,
                    max_new_tokens=params.max_new_tokens,
                    stopping_criteria=stopping_when(stop),
                    **sampling,
                )

        return stream_from_thread(run, streamer)

    async def cleanup(self) -> None:
        """Drop the model."""
        self._model = self._tokenizer = None


def _history(given: Any) -> list[tuple[str, str]]:
    if not isinstance(given, list):
        raise TypeError("history must be a list of {'user': ..., 'reply': ...} objects")
    turns = []
    for index, turn in enumerate(given):
        if not (
            isinstance(turn, Mapping)
            and isinstance(turn.get("user"), str)
            and isinstance(turn.get("reply"), str)
        ):
            raise TypeError(f"history[{index}] must be an object with 'user' and 'reply' texts")
        turns.append((turn["user"], turn["reply"]))
    return turns
