"""``TransformersPipelineNode`` (alias ``HFPipelineNode``): any ``transformers.pipeline`` as a node.

Runs in a worker process with a Python environment of its own (torch and
transformers, see :data:`~remotemedia.nodes.transformers.loading.TORCH_ENVIRONMENT`);
the server never imports either.

Inputs go to the pipeline as its task takes them: audio as ``{"raw", "sampling_rate"}``
(mono, resampled to the model's rate), text as text, JSON as it is. Outputs come back
as what they are: a transcript as Text, speech as Audio, an embedding or labels as
Json. Text generation streams: a Json ``{"text": piece, "interim": true}`` per piece
as the model produces it, then ``{"text": whole, "final": true, "pieces": n}``; it
stops at once when the session cancels it (a barge-in).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import attrs
import numpy as np
import trio

from remotemedia.errors import ModelNotFoundError
from remotemedia.media import Audio, Json, RuntimeData, Text
from remotemedia.nodes.base import Node
from remotemedia.nodes.transformers.loading import (
    DEVICES,
    DTYPES,
    TORCH_ENVIRONMENT,
    jsonable,
    model_source,
    mono_at,
    offline,
    resolve_device,
    resolve_dtype,
    stopping_when,
    stream_from_thread,
)
from remotemedia.params import param

__all__ = ["HFPipelineNode", "TransformersPipelineNode", "TransformersPipelineParams"]

AUDIO_TASKS = frozenset(
    {"automatic-speech-recognition", "audio-classification", "zero-shot-audio-classification"}
)
GENERATION_TASKS = frozenset({"text-generation", "text2text-generation"})
SPEECH_TASKS = frozenset({"text-to-audio", "text-to-speech"})


@attrs.frozen
class TransformersPipelineParams:
    """Parameters of :class:`TransformersPipelineNode`."""

    task: str = param(
        "",
        doc="The transformers pipeline task: automatic-speech-recognition, text-generation, "
        "feature-extraction, text-classification, text-to-audio, ...",
    )
    model: str | None = param(
        None,
        doc="A local model folder in Hugging Face layout (a hub id only from the server's "
        "--node-config, which then downloads it).",
        server_path=True,
    )
    device: str = param("auto", doc="auto (CUDA when present, else CPU), cpu, cuda, cuda:N.")
    dtype: str = param("auto", doc="auto: bfloat16 on a GPU, float32 on the CPU.", choices=DTYPES)
    trust_remote_code: bool = param(
        False,
        doc="Run the model folder's own Python code; only the server's --node-config may set it.",
        server_only=True,
    )
    model_kwargs: Mapping[str, Any] = param(
        attrs.Factory(dict), doc="Keyword arguments for loading the model."
    )
    pipeline_kwargs: Mapping[str, Any] = param(
        attrs.Factory(dict),
        doc="Keyword arguments for each call (max_new_tokens, top_k, candidate_labels, ...).",
    )
    stream: bool = param(True, doc="Text generation: a result per piece as it is generated.")
    pooling: str = param(
        "mean",
        doc="feature-extraction: one vector per input ('mean' of the tokens, or 'cls'), or "
        "'none' for every token's.",
        choices=("mean", "cls", "none"),
    )
    normalize: bool = param(True, doc="feature-extraction: scale pooled vectors to length 1.")

    def __attrs_post_init__(self) -> None:
        if not self.task:
            raise ValueError("task must name a transformers pipeline task, e.g. 'text-generation'")
        base = self.device.split(":", 1)[0]
        if base not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)} (or cuda:N)")


class TransformersPipelineNode(Node[TransformersPipelineParams]):
    """Run a Hugging Face transformers pipeline (any task) on each input, in a worker process."""

    node_type = "TransformersPipelineNode"
    Params = TransformersPipelineParams
    accepts = frozenset({"audio", "text", "json"})
    produces = frozenset({"audio", "text", "json"})
    environment = TORCH_ENVIRONMENT
    # One thread per worker process for the model's own math: workers are many, cores few.
    worker_environment = {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}

    def __init__(self, node_id: str, params: TransformersPipelineParams) -> None:
        super().__init__(node_id, params)
        self._pipe: Any = None
        self._rate = 16_000

    async def initialize(self) -> None:
        """Import transformers and build the pipeline (in a thread: it takes seconds)."""
        params = self.params
        source, local = model_source(params.model, self.node_type, "a transformers model")
        await self.report_progress(f"loading {params.task} model {source}")
        self._pipe = await trio.to_thread.run_sync(self._load, source, local)
        extractor = getattr(self._pipe, "feature_extractor", None)
        self._rate = int(getattr(extractor, "sampling_rate", None) or 16_000)

    def _load(self, source: str, local: bool) -> Any:
        params = self.params
        if local:
            offline()
        try:
            from transformers import pipeline
        except ImportError as exc:
            raise ModelNotFoundError(
                f"{self.node_type} needs transformers and torch in its environment: {exc}"
            ) from exc
        device = resolve_device(params.device)
        return pipeline(
            params.task,
            model=source,
            device=device,
            dtype=resolve_dtype(params.dtype, device),
            trust_remote_code=params.trust_remote_code,
            model_kwargs=dict(params.model_kwargs),
        )

    async def process(self, data: RuntimeData) -> AsyncGenerator[RuntimeData, None]:
        """Run the pipeline on one input; yield its output (or each generated piece)."""
        task = self.params.task
        value = self._pipeline_input(data)
        if task in GENERATION_TASKS and self.params.stream:
            async for item in self._generate(value):
                yield item
            return
        call = functools.partial(self._pipe, value, **self.params.pipeline_kwargs)
        result = await trio.to_thread.run_sync(call)
        yield self._output(result)

    def _pipeline_input(self, data: RuntimeData) -> Any:
        task = self.params.task
        if task in AUDIO_TASKS:
            if not isinstance(data, Audio):
                raise ValueError(f"task {task} takes audio, got {type(data).__name__}")
            samples = mono_at(data.samples, data.channels, data.sample_rate, self._rate)
            return {"raw": samples, "sampling_rate": self._rate}
        if isinstance(data, Text):
            return data.text
        if isinstance(data, Json):
            return data.value
        raise ValueError(f"task {task} takes text or JSON, got {type(data).__name__}")

    def _output(self, result: Any) -> RuntimeData:
        task = self.params.task
        if task == "automatic-speech-recognition" and isinstance(result, Mapping):
            return Text(str(result.get("text", "")).strip())
        if task in SPEECH_TASKS and isinstance(result, Mapping):
            audio = np.asarray(result["audio"], dtype=np.float32).reshape(-1)
            return Audio.adopt(audio, int(result["sampling_rate"]))
        if task == "feature-extraction":
            return Json(self._embedding(result))
        if task in GENERATION_TASKS:
            text = _generated_text(result)
            return Json({"text": text, "final": True, "pieces": 1})
        return Json(jsonable(result))

    def _embedding(self, result: Any) -> dict[str, Any]:
        # The pipeline gives [1][tokens][hidden] for one text.
        tokens = np.asarray(result, dtype=np.float32).reshape(-1, np.shape(result)[-1])
        if self.params.pooling == "none":
            return {"tokens": tokens.tolist(), "dimensions": tokens.shape[1]}
        vector = tokens.mean(axis=0) if self.params.pooling == "mean" else tokens[0]
        if self.params.normalize:
            norm = float(np.linalg.norm(vector))
            vector = vector / norm if norm > 0 else vector
        return {"embedding": vector.tolist(), "dimensions": int(vector.size)}

    async def _generate(self, prompt: Any) -> AsyncGenerator[RuntimeData, None]:
        from transformers import TextIteratorStreamer

        pipe = self._pipe
        streamer = TextIteratorStreamer(pipe.tokenizer, skip_prompt=True, skip_special_tokens=True)

        def run(stop: threading.Event) -> None:
            pipe(
                prompt,
                streamer=streamer,
                stopping_criteria=stopping_when(stop),
                **self.params.pipeline_kwargs,
            )

        pieces = []
        # Closed with this generator, at once: that is what stops the model's thread.
        async with contextlib.aclosing(stream_from_thread(run, streamer)) as generated:
            async for piece in generated:
                if piece:
                    pieces.append(piece)
                    yield Json({"text": piece, "interim": True})
        yield Json({"text": "".join(pieces), "final": True, "pieces": len(pieces)})

    async def cleanup(self) -> None:
        """Drop the model."""
        self._pipe = None


class HFPipelineNode(TransformersPipelineNode):
    """The original runtime's name of TransformersPipelineNode."""

    node_type = "HFPipelineNode"


def _generated_text(result: Any) -> str:
    first = result[0] if isinstance(result, list) and result else result
    text = first.get("generated_text", "") if isinstance(first, Mapping) else first
    if isinstance(text, list):  # chat input: the conversation, the reply last
        last = text[-1] if text else {}
        return str(last.get("content", "")) if isinstance(last, Mapping) else str(last)
    return str(text)
