"""``remotemedia run``: stream a WAV file through a pipeline in-process."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TextIO

import attrs
import trio

from remotemedia.cli.progress import ProgressBar
from remotemedia.media import Audio, Json, Text, kind_of
from remotemedia.pipeline import ManifestSource, open_pipeline
from remotemedia.session import Result, Session

__all__ = ["RunOptions", "RunSummary", "result_record", "run_file", "split_chunks"]


@attrs.frozen
class RunOptions:
    """How ``run`` streams its input.

    Attributes:
        chunk_ms: Duration of each input chunk in milliseconds.
        realtime: Pace chunks at the speed of real time instead of as fast as possible.
        node_id: Send chunks to this node instead of the source nodes.
    """

    chunk_ms: float = 20.0
    realtime: bool = False
    node_id: str | None = None


@attrs.define
class RunSummary:
    """What a run did: counts and per-node time."""

    chunks: int = 0
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    outputs: Counter[tuple[str, str]] = attrs.field(factory=Counter)
    node_stats: dict[str, tuple[int, int, float]] = attrs.field(factory=dict)

    def render(self) -> str:
        """Format the summary for people."""
        rtf = self.wall_seconds / self.audio_seconds if self.audio_seconds else 0.0
        lines = [
            f"Sent {self.chunks} chunks ({self.audio_seconds:.2f} s of audio) in "
            f"{self.wall_seconds:.2f} s (real-time factor {rtf:.3f}).",
            "Outputs: "
            + (
                ", ".join(f"{n} {kind} x{c}" for (n, kind), c in sorted(self.outputs.items()))
                or "none"
            ),
            f"{'node':<24}{'inputs':>8}{'outputs':>9}{'busy ms':>10}{'us/input':>10}",
        ]
        for node_id, (inputs, outputs, busy) in self.node_stats.items():
            per = busy * 1e6 / inputs if inputs else 0.0
            lines.append(f"{node_id:<24}{inputs:>8}{outputs:>9}{busy * 1e3:>10.1f}{per:>10.1f}")
        return "\n".join(lines)


def split_chunks(audio: Audio, chunk_ms: float) -> list[Audio]:
    """Cut audio into chunks of ``chunk_ms`` (the last one may be shorter)."""
    frames = max(1, round(audio.sample_rate * chunk_ms / 1000))
    step = frames * audio.channels
    samples = audio.samples
    return [
        Audio(samples[i : i + step], audio.sample_rate, audio.channels)
        for i in range(0, samples.size, step)
    ]


def result_kind(result: Result) -> str:
    """The kind of a result: ``audio``, ``text``, ``json``, ... or ``error`` for a lost input."""
    return "error" if result.data is None else kind_of(result.data)


def result_record(result: Result) -> dict[str, Any]:
    """The JSON-lines record of one result (the format of ``--jsonl``)."""
    data = result.data
    if data is None:
        message = str(result.error) if result.error else "lost"
        return {
            "node_id": result.node_id,
            "sequence": result.sequence,
            "kind": "error",
            "value": {"message": message},
        }
    value: Any
    if isinstance(data, Audio):
        value = {
            "sample_rate": data.sample_rate,
            "channels": data.channels,
            "num_samples": int(data.samples.size),
        }
        if data.metadata:
            value["metadata"] = dict(data.metadata)
    elif isinstance(data, Text):
        value = data.text
    elif isinstance(data, Json):
        value = data.value
    else:
        value = {"bytes": len(getattr(data, "data", getattr(data, "pixels", b"")))}
    return {
        "node_id": result.node_id,
        "sequence": result.sequence,
        "kind": kind_of(data),
        "value": value,
    }


def describe(result: Result) -> str | None:
    """A one-line human description of a result, or None for routine ones.

    Routine results are the per-chunk status events of a VAD and audio passed
    through unchanged; ``--all`` shows them too.
    """
    data = result.data
    where = f"[{result.node_id} #{result.sequence}]"
    if data is None:
        return f"{where} FAILED (the session goes on): {result.error}"
    if isinstance(data, Json):
        value = data.value
        if isinstance(value, dict) and "has_speech" in value:
            if value.get("is_speech_start"):
                return f"{where} speech start at {value.get('speech_start_ms', 0) / 1000:.2f} s"
            if value.get("is_speech_end"):
                return f"{where} speech end   at {value.get('speech_end_ms', 0) / 1000:.2f} s"
            return None
        return f"{where} json {json.dumps(value)}"
    if isinstance(data, Text):
        return f"{where} text {data.text!r}"
    if isinstance(data, Audio):
        if "start_ms" in data.metadata:
            start, end = data.metadata["start_ms"] / 1000, data.metadata["end_ms"] / 1000
            return f"{where} utterance {start:.2f}-{end:.2f} s ({data.duration:.2f} s of audio)"
        return None
    return f"{where} {result_kind(result)}"


async def run_file(
    source: ManifestSource,
    audio: Audio,
    options: RunOptions,
    on_result: Callable[[Result], None],
    *,
    progress: TextIO | None = None,
) -> RunSummary:
    """Stream audio through a pipeline in chunks and hand every result to ``on_result``.

    Args:
        source: The manifest.
        audio: The whole input.
        options: Chunking and pacing.
        on_result: Called with each result as it arrives.
        progress: Where to draw a progress bar (only if it is a terminal).

    Returns:
        Counts, timings and per-node statistics.
    """
    chunks = split_chunks(audio, options.chunk_ms)
    summary = RunSummary(chunks=len(chunks), audio_seconds=audio.duration)
    bar = ProgressBar(len(chunks), label="streaming", stream=progress or sys.stderr)
    started = time.perf_counter()
    async with open_pipeline(source) as pipeline:

        async def feed(session: Session) -> None:
            begin = trio.current_time()
            for index, chunk in enumerate(chunks):
                if options.realtime:
                    # As from a live microphone: a chunk exists once its audio has passed.
                    await trio.sleep_until(begin + (index + 1) * options.chunk_ms / 1000)
                await session.send(chunk, node_id=options.node_id)
                bar.update(index + 1)
            await session.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed, pipeline)
            async for result in pipeline:
                summary.outputs[(result.node_id, result_kind(result))] += 1
                on_result(result)
        bar.update(len(chunks), force=True)
        bar.close()
        summary.node_stats = {
            node_id: (s.inputs, s.outputs, s.busy) for node_id, s in pipeline.stats.items()
        }
    summary.wall_seconds = time.perf_counter() - started
    return summary
