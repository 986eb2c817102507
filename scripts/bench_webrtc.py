"""The WebRTC edge beside the WebSocket edge, in one run: round trips, CPU, capacity, barge-in.

Run through scripts/bench.py (`python3 scripts/bench.py webrtc`). The server runs as
a process with `--web-port` and WebRTC on loopback only:

- browser round trip: headless Chromium (Debian's) loads the page and, through
  `remotemedia.js`, opens `passthrough` over WebRTC and over the WebSocket; 20 ms
  apart, it sends a small text chunk and waits for its result (`performance.now()`);
  over WebRTC both go on the data channel;
- CPU per session and capacity: M sessions of aiortc clients (one Python process,
  pinned to the other core) stream the bundled speech through `vad` (resample +
  VAD) as a real-time Opus track; the server (pinned to one core) sends its own
  track back (silence: `vad` has no audio out). Latency: a frame handed to the
  client's sender -> its VAD result on the data channel. WebSocket rows: the same
  pipeline and speech, the page's 20 ms float chunks (trio-websocket clients);
- barge-in: the scripted `converse` user over WebRTC (the interruption played on
  the microphone track) -> the last frame of the cut reply received on the track.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests' aiortc client

from tests.clients.webrtc import (  # noqa: E402
    RtcSession,
    close_session,
    open_session,
    webrtc_loop,
)

from bench_web import _sessions as websocket_sessions  # noqa: E402
from bench_web import _stop  # noqa: E402
from remotemedia.wav import read_wav  # noqa: E402

SPEECH = ROOT / "src" / "remotemedia" / "data" / "speech.wav"
DRIVER = ROOT / "tests" / "clients" / "browser" / "drive.py"


def _server(cores: str | None = None) -> tuple[subprocess.Popen[str], str]:
    """A server with the page and WebRTC on loopback; (process, web host:port)."""
    pin = ["taskset", "-c", cores] if cores else []
    command = [
        *pin,
        sys.executable,
        *("-m", "remotemedia", "serve", "--bind", "127.0.0.1:0", "--max-sessions", "500"),
        *("--web-port", "0", "--webrtc", "on", "--webrtc-host-address", "127.0.0.1"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    found = re.search(r"browser page at http://(\S+?)/", process.stdout.readline())
    assert found, "the server did not start"
    return process, found[1]


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ browser round trip

_PROBE = """async () => {
  const m = await import('/remotemedia.js');
  const out = {};
  for (const transport of ['webrtc', 'websocket']) {
    const client = transport === 'webrtc'
      ? m.connectWebRTC(location.origin)
      : m.connect(`ws://${location.host}/v1/stream`);
    const stream = await client.stream('passthrough');
    const results = stream[Symbol.asyncIterator]();
    const rtts = [];
    for (let i = 0; i < COUNT; i++) {
      const started = performance.now();
      stream.sendText('x');
      await results.next();
      rtts.push(performance.now() - started);
      const wait = started + 20 - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
    stream.close();
    while (!(await results.next()).done);
    out[transport] = rtts;
  }
  return out;
}"""


def browser_round_trips(quick: bool) -> dict[str, Any]:
    """Round trips from the page, over WebRTC and over the WebSocket, side by side."""
    chromium = shutil.which("chromium", path="/usr/bin:/usr/local/bin")
    if chromium is None:
        return {"skipped": "chromium is not installed"}
    count = 300 if quick else 1000
    process, web = _server()
    try:
        probe = _PROBE.replace("COUNT", str(count))
        steps = [["goto", f"http://{web}/"], ["eval", f"({probe})()"]]
        with tempfile.NamedTemporaryFile(suffix=".wav") as silence:
            done = subprocess.run(
                [sys.executable, str(DRIVER), chromium, silence.name, json.dumps(steps)],
                capture_output=True,
                text=True,
                timeout=300,
                check=True,
            )
    finally:
        _stop(process)
    out = json.loads(done.stdout)
    measured = next(iter(out["texts"].values()))
    result = {}
    for transport, rtts in measured.items():
        steady = rtts[50:]  # after the start-up
        result[transport] = {
            "chunks": len(steady),
            "p50_ms": float(np.percentile(steady, 50)),
            "p99_ms": float(np.percentile(steady, 99)),
        }
    return result


# ------------------------------------------------------------------ concurrent sessions


def _speech_48k(seconds: float) -> np.ndarray:
    audio = read_wav(SPEECH)
    samples = soxr.resample(audio.samples, audio.sample_rate, 48_000).astype(np.float32)
    repeats = int(np.ceil(seconds * 48_000 / samples.size))
    return np.tile(samples, repeats)[: int(seconds * 48_000)]


async def _rtc_sessions(web: str, count: int, seconds: float) -> dict[str, Any]:
    """``count`` real-time WebRTC sessions through `vad`; frame -> result latencies."""
    speech = _speech_48k(seconds)
    latencies: list[float] = []
    failed: list[str] = []

    async def one(nursery: trio.Nursery) -> None:
        try:
            # As the page opens `vad`: the VAD's pass-through audio is not wanted.
            session = await open_session(
                f"http://{web}", pipeline="vad", microphone=speech, audio="none", nursery=nursery
            )
            await session.until(lambda s: "ready" in s.kinds(), 60)
            await trio.sleep(seconds + 0.5)
            latencies.extend(_frame_latencies(session))
            await close_session(session)
        except Exception as error:  # counted: the session failed
            failed.append(f"{type(error).__name__}: {error}")

    async with webrtc_loop(), trio.open_nursery() as nursery:
        async with trio.open_nursery() as sessions:
            for index in range(count):
                sessions.start_soon(one, nursery)
                await trio.sleep(0.02 * (index % 50) / max(count, 1))
        nursery.cancel_scope.cancel()
    return {
        "sessions": count,
        "failed": len(failed),
        "p50_ms": float(np.percentile(latencies, 50)) if latencies else None,
        "p99_ms": float(np.percentile(latencies, 99)) if latencies else None,
    }


def _frame_latencies(session: RtcSession) -> list[float]:
    """Each VAD result's arrival less the time its frame was handed to the sender."""
    assert session.microphone is not None
    sent = session.microphone.sent_at
    out = []
    for at, response in session.responses:
        if response.WhichOneof("response") != "result":
            continue
        sequence = response.result.sequence
        if "_status" not in response.result.data_outputs and sequence < len(sent):
            out.append((at - sent[sequence]) * 1000)
    return out


def _rows(kind: str, counts: tuple[int, ...], seconds: float) -> list[dict[str, Any]]:
    """Each count against a fresh server on core 0, the clients in this process on core 1."""
    rows = []
    os.sched_setaffinity(0, {1})
    try:
        for count in counts:
            process, web = _server(cores="0")
            try:
                started = _cpu_seconds(process.pid)
                began = time.monotonic()
                if kind == "webrtc":
                    row = trio.run(_rtc_sessions, web, count, seconds)
                else:
                    row = trio.run(websocket_sessions, web, count, seconds)
                row["server_cpu_percent"] = (
                    100 * (_cpu_seconds(process.pid) - started) / (time.monotonic() - began)
                )
                rows.append(row)
            finally:
                _stop(process)
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return rows


# ------------------------------------------------------------------ barge-in


async def _barge_in(web: str) -> float:
    """The interruption's start on the microphone -> the cut reply's last frame received."""
    from remotemedia.cli.converse import INTERRUPTION, QUESTION
    from remotemedia.testing import synthesize_speech

    def spoken(text: str) -> np.ndarray:
        sample = synthesize_speech((text,), lead_s=0.0, tail_s=0.0)
        resampled: np.ndarray = soxr.resample(sample.audio.samples, sample.audio.sample_rate, RATE)
        return resampled.astype(np.float32)

    question, interruption = spoken(QUESTION), spoken(INTERRUPTION)
    async with webrtc_loop(), trio.open_nursery() as nursery:
        session = await open_session(
            f"http://{web}",
            pipeline="converse",
            microphone=np.zeros(RATE, np.float32),
            nursery=nursery,
        )
        await session.until(lambda s: "ready" in s.kinds(), 60)
        assert session.microphone is not None
        session.microphone.play(question)
        await session.until(lambda s: _loud_frames(s) >= 60, 60)
        frames_before = len(session.microphone.sent_at)
        session.microphone.play(interruption)
        mic = session.microphone
        await session.until(lambda s: len(mic.sent_at) > frames_before, 5)
        speech_start = session.microphone.sent_at[frames_before]
        await session.until(lambda s: any(v.get("interrupted") for _, v in s.json_results()), 30)
        cut = next(v["turn"] for _, v in session.json_results() if v.get("interrupted"))
        await trio.sleep(1.0)  # what is in flight arrives
        # The cut reply's frames: those before the next turn's reply began (the
        # user, still talking, may cut that one too).
        end = min(
            (at for at, v in session.json_results() if "reply" in v and v.get("turn") != cut),
            default=math.inf,
        )
        last = max(at for at, frame in session.frames if _loud(frame) and speech_start < at < end)
        await close_session(session)
        nursery.cancel_scope.cancel()
    return (last - speech_start) * 1000


RATE = 48_000


def _loud(frame: np.ndarray) -> bool:
    return bool(np.sqrt(np.mean(frame**2)) > 0.01)


def _loud_frames(session: RtcSession) -> int:
    return sum(_loud(frame) for _, frame in session.frames)


def barge_in(runs: int) -> dict[str, Any]:
    """``runs`` conversations, each against a fresh server."""
    cuts = []
    for _ in range(runs):
        process, web = _server()
        try:
            cuts.append(trio.run(_barge_in, web))
        finally:
            _stop(process)
    return {
        "runs": runs,
        "p50_ms": float(np.percentile(cuts, 50)),
        "max_ms": float(max(cuts)),
    }


def bench_webrtc(quick: bool) -> dict[str, Any]:
    """Every WebRTC figure, with the WebSocket's beside it."""
    counts = (2, 5, 10) if quick else (2, 5, 10, 15, 20)
    seconds = 8.0 if quick else 14.0
    return {
        "browser": browser_round_trips(quick),
        "webrtc": _rows("webrtc", counts, seconds),
        "websocket": _rows("websocket", counts, seconds),
        "barge_in": barge_in(2 if quick else 5),
    }


def _within(rows: list[dict[str, Any]]) -> int:
    fine = [r["sessions"] for r in rows if not r["failed"] and (r["p99_ms"] or 1e9) <= 50]
    return max(fine, default=0)


def render_webrtc(r: dict[str, Any]) -> list[str]:
    """The WebRTC table for BENCHMARKS.md, the WebSocket's figures beside."""
    lines = [
        "One run: the WebRTC edge and the WebSocket edge side by side (`python3 "
        "scripts/bench.py webrtc`). Server as a process with WebRTC on loopback only; in "
        "the session rows it is pinned to one core and the clients (one Python process) "
        "to the other. A WebRTC client here is aiortc, as the server is: Opus encoding and "
        "decoding, SRTP and SCTP in Python on both sides, so the client core is as busy "
        "as the server's. Targets from the WebRTC issue.",
        "",
        "| metric | WebRTC | WebSocket |",
        "|---|---:|---:|",
    ]
    browser = r["browser"]
    if "skipped" in browser:
        lines.append(f"| browser round trip | skipped: {browser['skipped']} | |")
    else:
        rtc, ws = browser["webrtc"], browser["websocket"]
        lines.append(
            "| browser -> server -> browser round trip, `passthrough`, a text chunk every "
            f"20 ms from the page (headless Chromium), p50 / p99 over {rtc['chunks']} chunks "
            f"| {rtc['p50_ms']:.1f} / {rtc['p99_ms']:.1f} ms "
            f"| {ws['p50_ms']:.1f} / {ws['p99_ms']:.1f} ms |"
        )
    by_count = {row["sessions"]: row for row in r["websocket"]}
    for row in r["webrtc"]:
        other = by_count.get(row["sessions"])
        cells = []
        for each in (row, other):
            if each is None or each["p50_ms"] is None:
                cells.append("-")
                continue
            per = each["server_cpu_percent"] / each["sessions"]
            cells.append(
                f"{each['p50_ms']:.1f} / {each['p99_ms']:.1f} ms, {each['failed']} failed; "
                f"server {each['server_cpu_percent']:.0f} % of a core ({per:.1f} % each)"
            )
        lines.append(
            f"| {row['sessions']} real-time sessions, resample + VAD: chunk -> result p50 / "
            f"p99, failed; server CPU | {cells[0]} | {cells[1]} |"
        )
    lines.append(
        f"| most sessions with p99 <= 50 ms (server on one core) | {_within(r['webrtc'])} "
        f"| {_within(r['websocket'])} |"
    )
    barge = r["barge_in"]
    lines.append(
        f"| barge-in: user speech start -> last frame of the cut reply received, p50 / max "
        f"over {barge['runs']} conversations | {barge['p50_ms']:.0f} / {barge['max_ms']:.0f} "
        "ms | (see Barge-in, over gRPC) |"
    )
    return lines


if __name__ == "__main__":
    print(json.dumps(bench_webrtc("quick" in sys.argv), indent=2))
