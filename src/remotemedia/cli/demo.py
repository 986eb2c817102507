"""``remotemedia demo``: the bundled VAD pipeline over bundled speech, checked against truth."""

from __future__ import annotations

import json
import math
import sys
from importlib import resources
from pathlib import Path

import trio

from remotemedia.cli.run import RunOptions, describe, run_file
from remotemedia.media import Json
from remotemedia.session import Result
from remotemedia.wav import read_wav

__all__ = ["DEMO_SPEECH", "run_demo"]

TOLERANCE_MS = 100.0
"""How far a detected bound may be from the truth and still count as a match."""

DEMO_SPEECH = "speech.wav"
"""Bundled speech: sentences synthesised by scripts/make_speech.py, with a .json of truths."""


def run_demo(*, realtime: bool = True) -> int:
    """Run the bundled ``vad`` example over the bundled speech and print its events.

    Args:
        realtime: Pace the audio at real-time speed, as a live source would.

    Returns:
        0 when every utterance was detected within 100 ms of its true bounds, else 1.
    """
    data = resources.files("remotemedia") / "data"
    wav = Path(str(data / DEMO_SPEECH))
    truth = json.loads((data / "speech.json").read_text(encoding="utf-8"))
    audio = read_wav(wav)
    print(
        f"Streaming {audio.duration:.1f} s of synthesised speech ({audio.sample_rate} Hz) in "
        "20 ms chunks through the bundled 'vad' pipeline "
        "(FastResampleNode -> AudioChunkerNode -> SileroVADNode):"
    )
    found: list[dict[str, float]] = []

    def show(result: Result) -> None:
        line = describe(result)
        if line is not None:
            print(line, flush=True)
        if isinstance(result.data, Json) and isinstance(result.data.value, dict):
            value = result.data.value
            if value.get("is_speech_start"):
                found.append({"start_ms": value["speech_start_ms"]})
            if value.get("is_speech_end") and found:
                found[-1]["end_ms"] = value["speech_end_ms"]

    summary = trio.run(run_file, "vad", audio, RunOptions(realtime=realtime), show)
    print()
    print(f"Utterances in the file (truth) vs detected (within {TOLERANCE_MS:.0f} ms?):")
    matched = len(found) == len(truth["segments"])
    for index, segment in enumerate(truth["segments"]):
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
    sys.stdout.flush()
    print(summary.render(), file=sys.stderr)
    return 0 if matched else 1
