"""Conversation speed: end of speech -> final transcript over gRPC, in real time.

Run through scripts/bench.py (`python3 scripts/bench.py conversation`). A real
`remotemedia serve` process; the asyncio client streams Piper's speech of the sixty
test sentences (`remotemedia.testing.sentences`, 1 s apart) through the bundled
`transcribe` pipeline in 20 ms chunks, each sent when its audio would have been
recorded. A sentence's latency is from its true end (known from the synthesis, not
the VAD's estimate) to its final transcript. Three configurations, each on a fresh
server:

- `speculative`: the bundled pipeline (utterances end after 200 ms of silence,
  speculation at 64 ms, Whisper's fast path on a 12 s window, beam 5);
- `fast`: the same without speculation;
- `before`: the previous defaults (300 ms of silence, faster-whisper's own path with
  timestamps and its 30 s window, no speculation, OpenMP at its default of a thread
  per core);
- `interims`: the bundled pipeline with interim transcripts every 0.5 s;
- `interims_kept`: the same with Whisper's `keep_stable` (as the `converse` pipeline
  has them): the final transcript keeps the stable words.

Also the word error rate of each, the speculations started, committed and cancelled
(the server's metrics: cancelled ones are wasted Whisper work), and the CPU time of
the server and its worker processes per second of audio; for `interims`, how many
words interims showed before each sentence's true end, and how often the final
transcript revised a word LocalAgreement-2 had made stable.
"""

from __future__ import annotations

import asyncio
import copy
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_grpc import stop_server  # noqa: E402

CONFIGS = ("speculative", "fast", "before", "interims", "interims_kept")
INTERIM_MS = 500


def start_server(config: str) -> tuple[subprocess.Popen[str], str, int]:
    """`remotemedia serve` with metrics on free ports: (process, address, metrics port)."""
    env = dict(os.environ)
    if config == "before":
        # The old default left OpenMP at its default: a thread per core (2 here).
        env["OMP_NUM_THREADS"] = str(os.cpu_count() or 1)
    command = [sys.executable, "-m", "remotemedia", "serve", "--bind", "127.0.0.1:0"]
    process = subprocess.Popen(
        [*command, "--metrics-port", "0"], stdout=subprocess.PIPE, text=True, env=env
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    listening = re.search(r"listening on (\S+):(\d+)", line)
    metrics = re.search(r"metrics at http://\S+?:(\d+)/metrics", line)
    if listening is None or metrics is None:
        raise SystemExit(f"the server did not start: {line!r}")
    return process, f"{listening[1]}:{listening[2]}", int(metrics[1])


def manifest(config: str) -> dict[str, Any]:
    """The bundled transcribe pipeline, as ``config`` sets it."""
    from remotemedia.examples import example_path

    document: dict[str, Any] = yaml.safe_load(example_path("transcribe").read_text())
    document = copy.deepcopy(document)
    for node in document["nodes"]:
        if node["id"] == "utterances" and config.startswith("interims"):
            node["params"]["interim_interval_ms"] = INTERIM_MS
        if node["id"] == "whisper" and config == "interims_kept":
            node["params"]["keep_stable"] = True
        if node["id"] == "vad" and config in ("fast", "before"):
            node["params"]["speculative_silence_ms"] = 0
        if node["id"] == "vad" and config == "before":
            node["params"]["min_silence_duration_ms"] = 300
        if node["id"] == "whisper" and config == "before":
            node["params"].update(encoder_frames=3000, without_timestamps=False, beam_size=1)
    return document


def _events(metrics_port: int) -> dict[str, float]:
    """The server's node event counts, by event (speculation_started, interim_skipped, ...)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        body = reply.read().decode()
    pattern = r'^remotemedia_node_events_total\{[^}]*event="(\w+)"\} (\S+)$'
    counts: dict[str, float] = {}
    for m in re.finditer(pattern, body, re.MULTILINE):
        counts[m[1]] = counts.get(m[1], 0.0) + float(m[2])
    return counts


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process, its reaped children and its live descendants.

    A session's worker processes exit with it; the server reaps them, and their CPU
    time is then in its own ``cutime``/``cstime``.
    """
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        parents[int(entry.name)] = int(fields[1])
        reaped = int(fields[13]) + int(fields[14]) if int(entry.name) == pid else 0
        times[int(entry.name)] = (int(fields[11]) + int(fields[12]) + reaped) / tick
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, of in parents.items() if of == parent]
        tree.update(children)
        frontier += children
    return sum(times.get(p, 0.0) for p in tree)


async def _session(
    address: str, config: str, speech: Any, interims: list[dict[str, Any]] | None = None
) -> list[tuple[float, float, str, str]]:
    """Stream the speech in real time; (end_ms, arrival ms, text, utterance) per transcript.

    Interim results go to ``interims`` (with their arrival in stream ms), if given.
    """
    from remotemedia import Audio
    from remotemedia.client import Client

    audio = speech.audio
    step = audio.sample_rate // 50
    count = -(-audio.samples.size // step)
    chunks = [
        Audio(audio.samples[i * step : (i + 1) * step], audio.sample_rate) for i in range(count)
    ]
    transcripts: list[tuple[float, float, str, str]] = []
    async with Client.connect(address) as client, client.stream(manifest(config)) as stream:
        begin = time.perf_counter()

        async def feed() -> None:
            for index, chunk in enumerate(chunks):
                # Chunk k holds stream time [20k, 20k + 20) ms: it exists at 20(k + 1).
                delay = begin + (index + 1) * 0.020 - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await stream.send(chunk, sequence=index)
            await stream.close()

        feeder = asyncio.create_task(feed())
        async for result in stream:
            value = getattr(result.data, "value", None)
            now_ms = (time.perf_counter() - begin) * 1000
            if isinstance(value, dict) and value.get("interim") and interims is not None:
                interims.append({**value, "arrival_ms": now_ms})
            elif isinstance(value, dict) and "text" in value and "end_ms" in value:
                utterance = str(value.get("utterance", ""))
                transcripts.append((float(value["end_ms"]), now_ms, str(value["text"]), utterance))
        await feeder
    return transcripts


def run_config(config: str, speech: Any) -> dict[str, Any]:
    """One configuration on a fresh server: latencies per sentence, WER, speculations."""
    from remotemedia.nodes.asr.agreement import common_prefix, words_of
    from remotemedia.testing import word_error_rate

    process, address, metrics_port = start_server(config)
    interims: list[dict[str, Any]] = []
    try:
        cpu_before = cpu_seconds(process.pid)
        transcripts = asyncio.run(_session(address, config, speech, interims))
        cpu = cpu_seconds(process.pid) - cpu_before
        counted = _events(metrics_port)
    finally:
        stop_server(process)
    latencies = []
    shown = final_words = revised = 0
    for segment in speech.segments:
        # The sentence's transcript: the first whose VAD end falls after its true end
        # and before the next sentence starts.
        mine = [t for t in transcripts if segment.end_ms - 200 <= t[0] <= segment.end_ms + 900]
        if mine:
            latencies.append(mine[0][1] - segment.end_ms)
            said = words_of(mine[0][2])
            final_words += len(said)
            # What the interims of its utterance showed before the sentence ended.
            before = [
                i
                for i in interims
                if i["utterance"] == mine[0][3] and i["arrival_ms"] <= segment.end_ms
            ]
            if before:
                last = before[-1]
                shown += common_prefix(words_of(f"{last['stable']} {last['unstable']}"), said)
            ours = [i for i in interims if i["utterance"] == mine[0][3]]
            if ours:
                stable = words_of(ours[-1]["stable"])
                revised += said[: len(stable)] != stable
    heard = " ".join(t[2] for t in transcripts)
    speculations = {
        k.removeprefix("speculation_"): v
        for k, v in counted.items()
        if k.startswith("speculation_")
    }
    return {
        "config": config,
        "sentences": len(speech.segments),
        "transcripts": len(transcripts),
        "matched": len(latencies),
        "p50_ms": float(np.percentile(latencies, 50)),
        "p95_ms": float(np.percentile(latencies, 95)),
        "wer": word_error_rate(" ".join(s.text for s in speech.segments), heard),
        "speculations": speculations,
        "cpu_per_audio_s": cpu / speech.audio.duration,
        "cpu_per_speech_s": cpu / sum((s.end_ms - s.start_ms) / 1000 for s in speech.segments),
        "interims": len(interims),
        "interims_skipped": counted.get("interim_skipped", 0.0),
        "interim_words_before_end": shown / final_words if final_words else 0.0,
        "stable_revised": revised,
    }


def bench_conversation(quick: bool) -> dict[str, Any]:
    """Every configuration, on the same synthesised speech."""
    from remotemedia.testing import TEST_SENTENCES, synthesize_speech

    sentences = TEST_SENTENCES[:20] if quick else TEST_SENTENCES
    speech = synthesize_speech(sentences, gap_s=1.0, lead_s=0.5, tail_s=1.0)
    return {"rows": [run_config(config, speech) for config in CONFIGS]}
