"""``remotemedia demo``: real server, real models, real worker processes, live transcripts.

Synthesises a few sentences with Piper, starts ``remotemedia serve`` as a child process
on a free port, streams the speech over gRPC in 20 ms chunks (in real time unless
``--fast``) through the bundled ``transcribe`` pipeline (resample, VAD, utterances,
Whisper tiny.en in its own worker process), and prints each transcript as it arrives
with its end-of-speech to transcript latency and word error rate. Then it stops the
server with SIGTERM (a graceful drain).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import trio

from remotemedia.cli.local_server import local_server
from remotemedia.cli.run import RunOptions
from remotemedia.cli.stream import stream_file
from remotemedia.media import Json
from remotemedia.session import Result
from remotemedia.testing import SpeechSample, SpeechSegment, synthesize_speech, word_error_rate

__all__ = ["SENTENCES", "run_demo"]

SENTENCES = (
    "Remote media streams audio through a pipeline of nodes.",
    "Each session lives in its own Trio nursery.",
    "The speech recognizer runs in a separate worker process.",
    "Shared memory carries the audio between processes.",
    "Results come back while you are still talking.",
)


def run_demo(*, realtime: bool = True) -> int:
    """Run the demo; returns 0 when every sentence came back with a word error rate <= 15 %."""
    return trio.run(_demo, realtime)


async def _demo(realtime: bool) -> int:
    print(f"Synthesising {len(SENTENCES)} sentences with Piper (en_US-joe-medium)...", flush=True)
    speech: SpeechSample = await trio.to_thread.run_sync(
        lambda: synthesize_speech(SENTENCES, gap_s=1.0, lead_s=0.5, tail_s=1.0)
    )
    transcripts: list[dict[str, Any]] = []
    async with local_server() as address:
        print(
            f"Streaming {speech.audio.duration:.1f} s of speech over gRPC in 20 ms chunks"
            f"{' in real time' if realtime else ''} through the bundled 'transcribe' pipeline "
            "(resample -> chunker -> Silero VAD -> utterances -> Whisper tiny.en in a worker "
            "process):",
            flush=True,
        )
        started = time.monotonic()

        def ready() -> None:
            nonlocal started
            started = time.monotonic()  # the stream's time zero: its first chunk

        def show(result: Result) -> None:
            if not isinstance(result.data, Json):
                return
            value = dict(result.data.value)
            # Stream time at arrival; a chunk is sent when its audio would have been
            # recorded, so the speech's true end (from the synthesis) is comparable.
            value["arrival_ms"] = (time.monotonic() - started) * 1000
            truth = _sentence_of(speech, value)
            transcripts.append(value)
            latency = (
                ""
                if truth is None
                else (
                    f"  (end of speech -> transcript {value['arrival_ms'] - truth.end_ms:.0f} ms)"
                )
            )
            print(
                f"  [{value.get('start_ms', 0) / 1000:5.2f}-{value.get('end_ms', 0) / 1000:5.2f} s]"
                f" {value['text']!r}" + (latency if realtime else ""),
                flush=True,
            )

        summary = await stream_file(
            address, "transcribe", speech.audio, RunOptions(realtime=realtime), show, on_ready=ready
        )
        print(summary)
    return _compare(speech, transcripts, realtime)


def _sentence_of(speech: SpeechSample, transcript: dict[str, Any]) -> SpeechSegment | None:
    """The sentence whose true end a transcript's utterance ends nearest to (within 1 s)."""
    end = float(transcript.get("end_ms", -1e9))
    nearest = min(speech.segments, key=lambda segment: abs(segment.end_ms - end))
    return nearest if abs(nearest.end_ms - end) <= 1000 else None


def _compare(speech: SpeechSample, transcripts: list[dict[str, Any]], realtime: bool) -> int:
    print()
    print("Sentence (truth) -> transcript, word error rate:")
    rates, latencies = [], []
    for segment in speech.segments:
        # An utterance may end at a pause inside a sentence: join what falls within it.
        mine = [
            t
            for t in transcripts
            if segment.start_ms - 500 <= float(t.get("end_ms", -1e9)) <= segment.end_ms + 1000
        ]
        text = " ".join(str(t["text"]) for t in mine)
        rate = word_error_rate(segment.text, text)
        rates.append(rate)
        if mine:
            latencies.append(mine[-1]["arrival_ms"] - segment.end_ms)
        print(f"  {rate:5.0%}  {segment.text!r} -> {text!r}")
    overall = float(np.mean(rates)) if rates else 1.0
    print(f"Mean word error rate: {overall:.1%} over {len(rates)} sentences.")
    if realtime and latencies:
        print(
            f"End of speech -> transcript: p50 {np.percentile(latencies, 50):.0f} ms, "
            f"max {max(latencies):.0f} ms (from the true end of each sentence, which the "
            "VAD hears about 100 ms late, then waits 200 ms of silence to decide)."
        )
    return 0 if len(latencies) == len(speech.segments) and overall <= 0.15 else 1
