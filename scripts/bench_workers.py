"""Worker-process benchmarks: IPC round trip, idle CPU, start time, crash handling, Whisper.

Run through scripts/bench.py (`python3 scripts/bench.py workers`).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import trio

from remotemedia import Audio, Json, Text, open_pipeline
from remotemedia.nodes import Node

SCRIPTS = Path(__file__).resolve().parent
# Worker children import SlowEcho from this file.
os.environ["PYTHONPATH"] = os.pathsep.join(
    filter(None, [str(SCRIPTS), os.environ.get("PYTHONPATH")])
)


class SlowEcho(Node[Any]):
    """Echo after 0.5 s (an input that is still being processed when the worker is killed)."""

    node_type = "SlowEcho"

    async def process(self, data: Any) -> Any:
        await trio.sleep(0.5)
        return data


def _worker(node_type: str = "PassThrough", **params: Any) -> dict[str, Any]:
    return {"id": "w", "node_type": node_type, "executor": "process", "params": params}


def _manifest(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"version": "v1", "nodes": list(nodes)}


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _worker_pids() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if b"remotemedia.executors.worker" in Path(f"/proc/{entry}/cmdline").read_bytes():
                    pids.append(int(entry))
            except OSError:
                pass
    return pids


async def round_trip(samples: int, count: int, executor: str = "process") -> dict[str, float]:
    chunk = Audio(np.zeros(samples, np.float32), 16_000)
    latencies = []
    node = {**_worker(), "executor": executor}
    async with open_pipeline(_manifest(node)) as pipeline:
        for index in range(count + 50):
            started = time.perf_counter()
            await pipeline.send(chunk)
            await pipeline.receive()
            if index >= 50:
                latencies.append((time.perf_counter() - started) * 1e6)
    return {
        "p50_us": float(np.percentile(latencies, 50)),
        "p99_us": float(np.percentile(latencies, 99)),
    }


def wakeup_floor(count: int, *, epoll: bool = False) -> dict[str, float]:
    """The machine's floor for a hop: two processes ping-ponging one byte over a
    socketpair with blocking calls (no event loop, no shared memory, no Python work).

    With ``epoll``, each side first waits in ``epoll_wait`` as an event loop does:
    on a VM a wake-up through epoll may cost far more than one of a blocked ``recv``
    (the kernel's hint that the waker is about to sleep does not pass through it).
    """
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the echo child: as little as a process can do per wake-up
        ours.close()
        poller = select.epoll()
        poller.register(theirs.fileno(), select.EPOLLIN)
        while not epoll or poller.poll():
            byte = theirs.recv(1)
            if not byte:
                break
            theirs.send(byte)
        os._exit(0)
    theirs.close()
    poller = select.epoll()
    poller.register(ours.fileno(), select.EPOLLIN)
    latencies = []
    try:
        for index in range(count + 200):
            started = time.perf_counter()
            ours.send(b"x")
            if epoll:
                poller.poll()
            ours.recv(1)
            if index >= 200:
                latencies.append((time.perf_counter() - started) * 1e6)
    finally:
        ours.close()
        os.waitpid(pid, 0)
    return {
        "p50_us": float(np.percentile(latencies, 50)),
        "p99_us": float(np.percentile(latencies, 99)),
    }


async def cpu_per_hop(samples: int, count: int) -> dict[str, float]:
    """CPU time one worker round trip costs each process, in microseconds.

    Steadier than wall time on a shared machine: it leaves out the wake-ups'
    latency and other tenants, and says where the Python work is.
    """
    chunk = Audio(np.zeros(samples, np.float32), 16_000)
    async with open_pipeline(_manifest(_worker())) as pipeline:
        for _ in range(100):  # warm up
            await pipeline.send(chunk)
            await pipeline.receive()
        workers = _worker_pids()
        ours, theirs = time.process_time(), _cpu(workers)
        for _ in range(count):
            await pipeline.send(chunk)
            await pipeline.receive()
        ours, theirs = time.process_time() - ours, _cpu(workers) - theirs
    return {"runtime_us": ours / count * 1e6, "worker_us": theirs / count * 1e6}


async def idle_cpu(seconds: float) -> dict[str, float]:
    manifest = _manifest(_worker(), {**_worker(), "id": "w2"})
    manifest["connections"] = [{"from": "w", "to": "w2"}]
    before = set(_worker_pids())
    async with open_pipeline(manifest) as pipeline:
        await pipeline.send(Text("warm"))
        await pipeline.receive()
        pids = [os.getpid(), *(set(_worker_pids()) - before)]
        cpu, wall = _cpu(pids), time.perf_counter()
        await trio.sleep(seconds)
        cpu, wall = _cpu(pids) - cpu, time.perf_counter() - wall
    return {"workers": len(pids) - 1, "cpu_percent_of_one_core": cpu / wall * 100}


async def start_time(node: dict[str, Any], repeats: int) -> dict[str, float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        async with open_pipeline(_manifest(node)):
            times.append(time.perf_counter() - started)
    return {"median_s": float(np.median(times))}


async def crash(repeats: int) -> dict[str, float]:
    from bench_workers import SlowEcho as importable  # so workers find it by module name
    from remotemedia.manifest import manifest_from_dict
    from remotemedia.nodes import default_registry
    from remotemedia.session import compile_graph, open_session

    registry = default_registry()
    registry.register(importable)
    graph = compile_graph(manifest_from_dict(_manifest(_worker("SlowEcho"))), registry)
    assert importable.node_type == "SlowEcho"
    detect, restart = [], []
    async with open_session(graph, registry) as session:
        for _ in range(repeats):
            before = set(_worker_pids())
            await session.send(Text("doomed"))
            await trio.sleep(0.1)
            (victim,) = [pid for pid in _worker_pids() if pid in before] or [max(_worker_pids())]
            killed = time.perf_counter()
            os.kill(victim, signal.SIGKILL)
            failure = await session.receive()
            assert failure.error is not None
            detect.append(time.perf_counter() - killed)
            # The replacement starts with the next input.
            await session.send(Text("alive"))
            assert (await session.receive()).data == Text("alive")
            restart.append(time.perf_counter() - killed)
    return {
        "error_after_kill_ms_median": float(np.median(detect)) * 1000,
        "ready_again_s_median": float(np.median(restart)),
    }


async def whisper(seconds_of_speech: float) -> dict[str, Any]:
    from remotemedia.cli.demo import SENTENCES
    from remotemedia.cli.run import split_chunks
    from remotemedia.testing import synthesize_speech

    speech = synthesize_speech(SENTENCES, gap_s=1.0, lead_s=0.5, tail_s=1.0)
    chunks = split_chunks(speech.audio, 20.0)
    latencies, busy = [], 0.0
    async with open_pipeline("transcribe") as pipeline:
        started = trio.current_time()

        async def feed() -> None:
            for index, chunk in enumerate(chunks):
                await trio.sleep_until(started + index * 0.02)
                await pipeline.send(chunk)
            await pipeline.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            async for result in pipeline:
                if isinstance(result.data, Json):
                    now = (trio.current_time() - started) * 1000
                    latencies.append(now - result.data.value["end_ms"])
        busy = pipeline.stats["whisper"].busy
    utterance_s = sum((s.end_ms - s.start_ms) / 1000 for s in speech.segments)
    return {
        "utterances": len(latencies),
        "speech_s": utterance_s,
        "eos_to_transcript_p50_ms": float(np.percentile(latencies, 50)),
        "eos_to_transcript_max_ms": float(max(latencies)),
        "vad_silence_ms": 300,
        "real_time_factor": busy / utterance_s,
    }


def _median_of_runs(runs: int, bench: Any, *args: Any) -> dict[str, float]:
    # A shared machine's noise moves a whole run (another tenant, a frequency change):
    # the median of a few runs, each in a fresh worker, is steadier than one long run.
    results = [trio.run(bench, *args) for _ in range(runs)]
    return {key: float(np.median([r[key] for r in results])) for key in results[0]}


def bench_workers(quick: bool) -> dict[str, Any]:
    """Every worker benchmark; returns the figures."""
    n = 300 if quick else 2000
    return {
        "round_trip_20ms": _median_of_runs(3, round_trip, 320, n),
        "round_trip_1s": _median_of_runs(3, round_trip, 16_000, n // 4),
        # The same node in-process: what the worker hop adds is the difference.
        "inprocess_20ms": _median_of_runs(3, round_trip, 320, n, "inprocess"),
        "inprocess_1s": _median_of_runs(3, round_trip, 16_000, n // 4, "inprocess"),
        "cpu_per_hop": _median_of_runs(3, cpu_per_hop, 320, n),
        "wakeup_floor": wakeup_floor(n),
        "wakeup_floor_epoll": wakeup_floor(n, epoll=True),
        "idle": trio.run(idle_cpu, 3.0 if quick else 10.0),
        "start_passthrough": trio.run(start_time, _worker(), 3 if quick else 5),
        "start_whisper": trio.run(start_time, _worker("WhisperNode"), 2 if quick else 3),
        "crash": trio.run(crash, 2 if quick else 5),
        "whisper": trio.run(whisper, 0.0),
    }


if __name__ == "__main__":
    import json

    print(json.dumps(bench_workers("quick" in sys.argv), indent=2))
