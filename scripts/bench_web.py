"""The browser edge: round trips from real Chromium, and concurrent WebSocket sessions.

Run through scripts/bench.py (`python3 scripts/bench.py web`). The server runs as a
process with `--web-port`:

- browser round trip: the bundled page in headless Chromium (Debian's), its fake
  microphone playing the bundled speech through `passthrough`; each 20 ms chunk's
  send to its result, measured in the page (`performance.now()`);
- concurrent sessions: M WebSocket clients (trio-websocket, in one process), each
  streaming 22.05 kHz speech paced in real time in 20 ms chunks through `vad`
  (resample + VAD); latency is a chunk's send to its first result.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import trio
from trio_websocket import open_websocket_url

from remotemedia.cli.run import split_chunks
from remotemedia.client.client import load_client_manifest
from remotemedia.service.convert import data_to_wire, manifest_to_wire
from remotemedia.v1 import streaming_pb2 as spb
from remotemedia.wav import read_wav

ROOT = Path(__file__).resolve().parent.parent
SPEECH = ROOT / "src" / "remotemedia" / "data" / "speech.wav"
DRIVER = ROOT / "tests" / "clients" / "browser" / "drive.py"


def _server() -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "remotemedia", "serve", "--bind", "127.0.0.1:0"]
    process = subprocess.Popen([*command, "--web-port", "0"], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r"browser page at http://(\S+?)/", line)
    assert found, line
    return process, found[1]


def _stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def browser_round_trip(quick: bool) -> dict[str, Any]:
    """Chunk round trips measured by the page itself, in real Chromium."""
    chromium = shutil.which("chromium", path="/usr/bin:/usr/local/bin")
    if chromium is None:
        return {"skipped": "chromium is not installed"}
    audio = read_wav(SPEECH)
    microphone = Path("/tmp") / "remotemedia-bench-mic.wav"
    with wave.open(str(microphone), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(audio.sample_rate)
        out.writeframes((np.clip(audio.samples, -1, 1) * 32767).astype("<i2").tobytes())
    process, web = _server()
    try:
        frames = 300 if quick else 650
        steps = [
            ["goto", f"http://{web}/?pipeline=passthrough&autostart=1&transport=websocket"],
            ["wait", f"window.__remotemedia.rtts.length >= {frames}", 60],
        ]
        done = subprocess.run(
            [sys.executable, str(DRIVER), chromium, str(microphone), json.dumps(steps)],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    finally:
        _stop(process)
        microphone.unlink(missing_ok=True)
    rtts = json.loads(done.stdout)["seen"]["rtts"][50:]  # after the start-up
    return {
        "frames": len(rtts),
        "p50_ms": float(np.percentile(rtts, 50)),
        "p99_ms": float(np.percentile(rtts, 99)),
    }


async def _session(
    web: str, chunks: list[Any], latencies: list[float], failures: list[str]
) -> None:
    manifest = manifest_to_wire(load_client_manifest("vad"))
    init = spb.StreamRequest(init=spb.StreamInit(manifest=manifest, client_version="v1"))
    sent: dict[int, float] = {}
    try:
        async with open_websocket_url(
            f"ws://{web}/v1/stream", subprotocols=["remotemedia.v1"]
        ) as ws:
            await ws.send_message(init.SerializeToString())
            while (
                spb.StreamResponse.FromString(await ws.get_message()).WhichOneof("response")
                != "ready"
            ):
                pass

            async def feed() -> None:
                begin = trio.current_time()
                for index, chunk in enumerate(chunks):
                    await trio.sleep_until(begin + index * 0.02)
                    request = spb.StreamRequest(
                        data_chunk=spb.DataChunk(buffer=data_to_wire(chunk), sequence=index)
                    )
                    sent[index] = time.perf_counter()
                    await ws.send_message(request.SerializeToString())
                close = spb.StreamRequest(control=spb.StreamControl(command=1))
                await ws.send_message(close.SerializeToString())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed)
                while True:
                    response = spb.StreamResponse.FromString(await ws.get_message())
                    kind = response.WhichOneof("response")
                    if kind == "closed":
                        break
                    if kind == "result":
                        at = sent.pop(response.result.sequence, None)
                        if at is not None:
                            latencies.append((time.perf_counter() - at) * 1000)
    except Exception as error:  # counted: the session failed
        failures.append(f"{type(error).__name__}: {error}")


def _kind(message: bytes | str) -> str | None:
    assert isinstance(message, bytes)
    return spb.StreamResponse.FromString(message).WhichOneof("response")


async def _sessions(web: str, count: int, seconds: float) -> dict[str, Any]:
    audio = read_wav(SPEECH)
    chunks = split_chunks(audio, 20.0)[: int(seconds * 50)]
    latencies: list[float] = []
    failures: list[str] = []
    async with trio.open_nursery() as nursery:
        for index in range(count):
            nursery.start_soon(_session, web, chunks, latencies, failures)
            await trio.sleep(0.02 * (index % 50) / max(count, 1))  # spread the chunk phases
    return {
        "sessions": count,
        "failed": len(failures),
        "p50_ms": float(np.percentile(latencies, 50)) if latencies else None,
        "p99_ms": float(np.percentile(latencies, 99)) if latencies else None,
    }


def bench_web(quick: bool) -> dict[str, Any]:
    """Both measurements."""
    result: dict[str, Any] = {"browser": browser_round_trip(quick)}
    counts = (10, 40) if quick else (10, 20, 40, 60, 80)
    rows = []
    for count in counts:
        process, web = _server()
        try:
            rows.append(trio.run(_sessions, web, count, 8.0 if quick else 14.0))
        finally:
            _stop(process)
    result["sessions"] = rows
    return result


if __name__ == "__main__":
    print(json.dumps(bench_web("quick" in sys.argv), indent=2))
