"""``remotemedia demo``: real server, real models, real worker processes, live transcripts.

Synthesises a few sentences with Piper, starts ``remotemedia serve`` as a child process
on a free port, streams the speech over gRPC in 20 ms chunks (in real time unless
``--fast``) through the bundled ``transcribe`` pipeline (resample, VAD, utterances,
Whisper tiny.en in its own worker process), and prints each transcript as it arrives
with its end-of-speech to transcript latency and word error rate. Then it stops the
server with SIGTERM (a graceful drain).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from typing import Any

import numpy as np
import trio

from remotemedia.cli.run import RunOptions
from remotemedia.cli.stream import stream_file
from remotemedia.errors import RemoteMediaError
from remotemedia.media import Json
from remotemedia.session import Result
from remotemedia.testing import SpeechSample, synthesize_speech, word_error_rate

__all__ = ["SENTENCES", "run_demo"]

SENTENCES = (
    "Remote media streams audio through a pipeline of nodes.",
    "Each session lives in its own Trio nursery.",
    "The speech recognizer runs in a separate worker process.",
    "Shared memory carries the audio between processes.",
    "Results come back while you are still talking.",
)

_LISTENING = re.compile(rb"listening on (\S+):(\d+)")
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 15.0


def run_demo(*, realtime: bool = True) -> int:
    """Run the demo; returns 0 when every sentence came back with a word error rate <= 15 %."""
    return trio.run(_demo, realtime)


async def _demo(realtime: bool) -> int:
    print(f"Synthesising {len(SENTENCES)} sentences with Piper (en_US-joe-medium)...", flush=True)
    speech: SpeechSample = await trio.to_thread.run_sync(
        lambda: synthesize_speech(SENTENCES, gap_s=1.0, lead_s=0.5, tail_s=1.0)
    )
    command = [sys.executable, "-m", "remotemedia", "serve", "--bind", "127.0.0.1:0"]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    transcripts: list[dict[str, Any]] = []
    try:
        address = await _wait_listening(process)
        print(f"Started `remotemedia serve` (pid {process.pid}), listening on {address}.")
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
            # end_ms is where the utterance (and so the speech) ended in the stream.
            value["latency_ms"] = (time.monotonic() - started) * 1000 - value.get("end_ms", 0.0)
            transcripts.append(value)
            print(
                f"  [{value.get('start_ms', 0) / 1000:5.2f}-{value.get('end_ms', 0) / 1000:5.2f} s]"
                f" {value['text']!r}"
                + (
                    f"  (end of speech -> transcript {value['latency_ms']:.0f} ms)"
                    if realtime
                    else ""
                ),
                flush=True,
            )

        summary = await stream_file(
            address, "transcribe", speech.audio, RunOptions(realtime=realtime), show, on_ready=ready
        )
        print(summary)
    finally:
        await _stop(process)
    return _compare(speech, transcripts, realtime)


def _compare(speech: SpeechSample, transcripts: list[dict[str, Any]], realtime: bool) -> int:
    print()
    print("Sentence (truth) -> transcript, word error rate:")
    rates = []
    for index, segment in enumerate(speech.segments):
        text = transcripts[index]["text"] if index < len(transcripts) else ""
        rate = word_error_rate(segment.text, text)
        rates.append(rate)
        print(f"  {rate:5.0%}  {segment.text!r} -> {text!r}")
    overall = float(np.mean(rates)) if rates else 1.0
    print(f"Mean word error rate: {overall:.1%} over {len(rates)} sentences.")
    if realtime and transcripts:
        latencies = [t["latency_ms"] for t in transcripts]
        print(
            f"End of speech -> transcript: p50 {np.percentile(latencies, 50):.0f} ms, "
            f"max {max(latencies):.0f} ms (includes the VAD's 300 ms of silence to decide)."
        )
    return 0 if len(transcripts) == len(speech.segments) and overall <= 0.15 else 1


async def _wait_listening(process: trio.Process) -> str:
    assert process.stdout is not None
    output = b""
    with trio.move_on_after(_START_TIMEOUT):
        while (match := _LISTENING.search(output)) is None:
            chunk = await process.stdout.receive_some(4096)
            if not chunk:
                break
            output += chunk
        if match is not None:
            return f"{match.group(1).decode()}:{match.group(2).decode()}"
    raise RemoteMediaError(
        f"The server did not start listening within {_START_TIMEOUT:g} s; it printed: "
        f"{output.decode(errors='replace').strip() or 'nothing'}"
    )


async def _stop(process: trio.Process) -> None:
    with trio.CancelScope(shield=True):
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        with trio.move_on_after(_STOP_TIMEOUT):
            code = await process.wait()
            print(f"Stopped the server with SIGTERM; it exited with status {code}.")
            return
        process.kill()
        await process.wait()
        print("The server did not stop within 15 s of SIGTERM and was killed.")
