"""gRPC benchmarks: a real `remotemedia serve` process and a client in another process.

Run through scripts/bench.py (`python3 scripts/bench.py grpc`). The client is the
asyncio client of `remotemedia.client` on a plain asyncio loop, so that what is
measured is the server plus the loopback, not a Trio bridge in the client.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
PASSTHROUGH = {
    "version": "v1",
    "metadata": {"name": "pass"},
    "nodes": [{"id": "pass", "node_type": "PassThrough"}],
    "connections": [],
}
RESAMPLE_VAD = {
    "version": "v1",
    "metadata": {"name": "resample-vad"},
    "nodes": [
        {"id": "resample", "node_type": "FastResampleNode", "params": {"target_rate": 16000}},
        # The client wants the events; echoing its own audio back would double the
        # traffic (the in-process benchmark keeps the original's pass-through).
        {"id": "vad", "node_type": "SileroVADNode", "params": {"emit_audio": False}},
    ],
    "connections": [{"from": "resample", "to": "vad"}],
}


def start_server(
    transport: str = "native",
    *,
    cores: str | None = None,
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[str], str]:
    """A `remotemedia serve` process on a free port (pinned to ``cores`` if given)."""
    pin = ["taskset", "-c", cores] if cores is not None else []
    process = subprocess.Popen(
        [
            *pin,
            sys.executable,
            "-m",
            "remotemedia",
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--max-sessions",
            "2000",
            "--transport",
            transport,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    match = re.search(r"listening on (\S+):(\d+)", process.stdout.readline())
    assert match, "the server did not start"
    return process, f"{match.group(1)}:{match.group(2)}"


def stop_server(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
        if process.stdout is not None:
            process.stdout.close()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def round_trips(address: str, count: int) -> dict[str, Any]:
    from remotemedia import Audio
    from remotemedia.client import Client

    chunk = Audio(np.zeros(320, np.float32), 16_000)
    latencies = []
    async with Client.connect(address) as client, client.stream(PASSTHROUGH) as stream:
        for index in range(count + 200):
            started = time.perf_counter()
            await stream.send(chunk)
            await stream.__anext__()
            if index >= 200:
                latencies.append((time.perf_counter() - started) * 1000)
        # Throughput: one sender, one receiver, as fast as the stream goes.
        total = 5000
        started = time.perf_counter()

        async def send() -> None:
            for _ in range(total):
                await stream.send(chunk)

        sender = asyncio.create_task(send())
        for _ in range(total):
            await stream.__anext__()
        await sender
        rate = total / (time.perf_counter() - started)
        await stream.close()
        async for _ in stream:
            pass
    return {
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "chunks_per_s": rate,
    }


async def session_rate(address: str, seconds: float, openers: int = 8) -> dict[str, Any]:
    """Sessions opened (init -> ready) and closed (close -> closed) per second by
    ``openers`` concurrent openers on one connection (PassThrough)."""
    from remotemedia.client import Client

    opened = 0
    async with Client.connect(address) as client:
        started = time.perf_counter()

        async def opener() -> None:
            nonlocal opened
            while time.perf_counter() - started < seconds:
                async with client.stream(PASSTHROUGH) as stream:
                    await stream.close()
                    async for _ in stream:
                        pass
                opened += 1

        await asyncio.gather(*(opener() for _ in range(openers)))
        elapsed = time.perf_counter() - started
    return {"sessions_per_s": opened / elapsed, "openers": openers}


async def realtime_sessions(address: str, sessions: int, seconds: float) -> dict[str, Any]:
    from remotemedia import Audio
    from remotemedia.client import Client
    from remotemedia.wav import read_wav

    speech = read_wav(ROOT / "src" / "remotemedia" / "data" / "speech.wav")
    step = speech.sample_rate // 50
    total = int(seconds * 50)
    samples = np.tile(speech.samples, 2)
    chunks = [Audio(samples[i * step : (i + 1) * step], speech.sample_rate) for i in range(total)]
    latencies: list[float] = []
    rng = np.random.default_rng(7)

    async def one(client: Client, offset: float) -> None:
        await asyncio.sleep(offset)
        sent: dict[int, float] = {}
        async with client.stream(RESAMPLE_VAD) as stream:

            async def feed() -> None:
                begin = time.perf_counter()
                for index, chunk in enumerate(chunks):
                    delay = begin + index * 0.020 - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    sent[index] = time.perf_counter()
                    await stream.send(chunk, sequence=index)
                await stream.close()

            feeder = asyncio.create_task(feed())
            async for result in stream:
                if type(result.data).__name__ == "Json" and result.sequence in sent:
                    latencies.append((time.perf_counter() - sent[result.sequence]) * 1000)
            await feeder

    # Several connections, as many real clients would use.
    async with Client.connect(address) as first, Client.connect(address) as second:
        clients = [first, second]
        await asyncio.gather(
            *(one(clients[i % 2], float(rng.uniform(0, 0.02))) for i in range(sessions))
        )
    return {
        "sessions": sessions,
        "p50_ms": float(np.percentile(latencies, 50)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "results": len(latencies),
    }


TRANSPORTS = ("native", "grpclib")


def _realtime_rows(
    process: subprocess.Popen[str], address: str, counts: tuple[int, ...], seconds: float
) -> list[dict[str, Any]]:
    rows = []
    for count in counts:
        cpu = cpu_seconds(process.pid)
        wall = time.perf_counter()
        row = asyncio.run(realtime_sessions(address, count, seconds))
        row["server_cpu_percent"] = (
            (cpu_seconds(process.pid) - cpu) / (time.perf_counter() - wall) * 100
        )
        rows.append(row)
    return rows


def bench_transport(transport: str, quick: bool) -> dict[str, Any]:
    """Every gRPC figure of one transport, each against a fresh server."""
    counts = (20, 40, 60) if quick else (20, 40, 60, 80, 100)
    seconds = 5.0 if quick else 10.0
    result: dict[str, Any] = {}
    process, address = start_server(transport)
    try:
        result["round_trip"] = asyncio.run(round_trips(address, 500 if quick else 3000))
        result["sessions"] = asyncio.run(session_rate(address, 2.0 if quick else 5.0))
        # Server and client share both cores.
        result["realtime_shared"] = _realtime_rows(process, address, counts, seconds)
    finally:
        stop_server(process)
    # The server on core 0 alone, the client on core 1.
    mine = os.sched_getaffinity(0)
    process, address = start_server(transport, cores="0")
    try:
        os.sched_setaffinity(0, {1})
        result["realtime_one_core"] = _realtime_rows(process, address, counts, seconds)
    finally:
        os.sched_setaffinity(0, mine)
        stop_server(process)
    return result


def bench_grpc(quick: bool) -> dict[str, Any]:
    """Run every gRPC benchmark against each transport, side by side; returns the figures."""
    return {"transports": {name: bench_transport(name, quick) for name in TRANSPORTS}}


if __name__ == "__main__":
    print(json.dumps(bench_grpc("quick" in sys.argv)))
