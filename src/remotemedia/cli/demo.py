"""``remotemedia demo``: a real server, a real client, speech through VAD, checked against truth.

Starts ``remotemedia serve`` as a child process on a free port, streams the bundled
speech over gRPC in 20 ms chunks (in real time unless ``--fast``) through the bundled
``vad`` pipeline, prints each speech start and end as it arrives, compares them with
the sentences' true bounds, then stops the server with SIGTERM (a graceful drain).
"""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import trio

from remotemedia.cli.run import RunOptions, describe
from remotemedia.cli.stream import stream_file
from remotemedia.errors import RemoteMediaError
from remotemedia.media import Json
from remotemedia.session import Result
from remotemedia.wav import read_wav

__all__ = ["DEMO_SPEECH", "run_demo"]

TOLERANCE_MS = 100.0
"""How far a detected bound may be from the truth and still count as a match."""

DEMO_SPEECH = "speech.wav"
"""Bundled speech: sentences synthesised by scripts/make_speech.py, with a .json of truths."""

_LISTENING = re.compile(rb"listening on (\S+):(\d+)")
_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 15.0


def run_demo(*, realtime: bool = True) -> int:
    """Run the demo; returns 0 when every utterance was found within 100 ms of the truth."""
    return trio.run(_demo, realtime)


async def _demo(realtime: bool) -> int:
    data = resources.files("remotemedia") / "data"
    truth = json.loads((data / "speech.json").read_text(encoding="utf-8"))
    audio = read_wav(Path(str(data / DEMO_SPEECH)))
    command = [sys.executable, "-m", "remotemedia", "serve", "--bind", "127.0.0.1:0"]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    try:
        address = await _wait_listening(process)
        print(f"Started `remotemedia serve` (pid {process.pid}), listening on {address}.")
        print(
            f"Streaming {audio.duration:.1f} s of synthesised speech ({audio.sample_rate} Hz) "
            f"over gRPC in 20 ms chunks{' in real time' if realtime else ''} through the "
            "bundled 'vad' pipeline (FastResampleNode -> AudioChunkerNode -> SileroVADNode):"
        )
        found: list[dict[str, float]] = []

        def show(result: Result) -> None:
            line = describe(result)
            if line is not None:
                print(line, flush=True)
            if isinstance(result.data, Json) and isinstance(result.data.value, dict):
                for event in result.data.value.get("events", ()):
                    if event["kind"] == "start":
                        found.append({"start_ms": event["ms"]})
                    elif found:
                        found[-1]["end_ms"] = event["ms"]

        summary = await stream_file(address, "vad", audio, RunOptions(realtime=realtime), show)
        print(summary)
    finally:
        await _stop(process)
    return _compare(truth["segments"], found)


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


def _compare(truth: list[dict[str, Any]], found: list[dict[str, float]]) -> int:
    print()
    print(f"Utterances in the file (truth) vs detected (within {TOLERANCE_MS:.0f} ms?):")
    matched = len(found) == len(truth)
    for index, segment in enumerate(truth):
        detected = found[index] if index < len(found) else {}
        start, end = detected.get("start_ms", math.nan), detected.get("end_ms", math.nan)
        close = (
            abs(start - segment["start_ms"]) <= TOLERANCE_MS
            and abs(end - segment["end_ms"]) <= TOLERANCE_MS
        )
        matched &= close
        print(
            f"  {segment['start_ms'] / 1000:5.2f}-{segment['end_ms'] / 1000:5.2f} s  "
            f"{start / 1000:5.2f}-{end / 1000:5.2f} s  {'yes' if close else 'NO '}  "
            f"{segment['text']!r}"
        )
    return 0 if matched else 1
