"""Where the server's CPU goes under real-time sessions: a py-spy profile, by layer.

    python3 scripts/profile_server.py [--sessions 40] [--seconds 20] [--transport native]

Starts `remotemedia serve` pinned to core 0, runs N real-time resample + VAD sessions
(20 ms chunks of 22,050 Hz speech, the gRPC benchmark's client) from this process
pinned to core 1, and samples the server with py-spy meanwhile. Each sample's
innermost frame is put in one layer (its own time, not its callees'): h2 framing,
grpclib, protobuf, the asyncio loop and the Trio bridge, Trio itself, the service and
transport code, the session and nodes, and the DSP and model libraries. The
breakdown goes into BENCHMARKS.json/BENCHMARKS.md under "profile" (grpclib) or
"profile_native".
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402
import bench_grpc  # noqa: E402

# First match wins: the innermost frame's file (as py-spy shortens it: ``trio/_core/...``)
# decides its layer.
LAYERS = [
    ("h2 framing (h2, hpack, hyperframe)", re.compile(r"^(h2|hpack|hyperframe)/")),
    ("grpclib", re.compile(r"^grpclib/")),
    ("protobuf", re.compile(r"^google/protobuf/")),
    ("asyncio loop and the Trio bridge", re.compile(r"^(asyncio|trio_asyncio|outcome)/")),
    ("Trio", re.compile(r"^trio/")),
    ("service and transport", re.compile(r"^remotemedia/(service|transport|client)/")),
    ("session and nodes (Python)", re.compile(r"^remotemedia/")),
    ("DSP and models (soxr, onnxruntime, numpy)", re.compile(r"^(soxr|onnxruntime|numpy)")),
    ("Python and the OS (sockets, selectors, builtins)", re.compile(r"")),
]


def layer_of(frame: str) -> str:
    """The layer of one collapsed-stack frame, ``function (path:line)``."""
    path = frame.rpartition("(")[2].rpartition(":")[0]
    for name, pattern in LAYERS:
        if pattern.search(path):
            return name
    return LAYERS[-1][0]


IDLE = re.compile(
    r"^(EpollIOManager\.get_events \(trio/_core/_io_epoll\.py"
    r"|.*\.select \(selectors\.py"
    r"|WorkerThread\._work \(trio/_core/_thread_cache\.py)"
)
"""Waits: the Trio loop's epoll, a selector, an idle Trio worker thread on its lock.
(py-spy's non-blocking mode samples waiting threads too; they use no CPU.)"""


INCLUSIVE = {
    "under grpclib (the gRPC edge: h2, framing, its asyncio protocol)": re.compile(r"\(grpclib/"),
    "under trio_asyncio (crossings between the loops)": re.compile(r"\(trio_asyncio/"),
    "under remotemedia.service (protocol, conversion)": re.compile(r"\(remotemedia/service/"),
    "under remotemedia.session (node tasks, channels)": re.compile(r"\(remotemedia/session/"),
    "under remotemedia.nodes (the nodes' own work)": re.compile(r"\(remotemedia/nodes/"),
}
"""Shares of busy samples with such a frame anywhere on the stack (callees included)."""


def inclusive(collapsed: str) -> dict[str, float]:
    """Percent of the busy samples whose stack passes through each of INCLUSIVE."""
    counts: collections.Counter[str] = collections.Counter()
    busy = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit() or IDLE.match(stack.split(";")[-1]):
            continue
        busy += int(count)
        for name, pattern in INCLUSIVE.items():
            if pattern.search(stack):
                counts[name] += int(count)
    return {name: counts[name] / (busy or 1) * 100 for name in INCLUSIVE}


def breakdown(collapsed: str) -> dict[str, float]:
    """Percent of the busy samples per layer, from py-spy's raw (collapsed) output.

    ``idle`` is the share of all samples that were waits for I/O.
    """
    counts: collections.Counter[str] = collections.Counter()
    idle = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        innermost = stack.split(";")[-1]
        if IDLE.match(innermost):
            idle += int(count)
        else:
            counts[layer_of(innermost)] += int(count)
    busy = sum(counts.values()) or 1
    shares = {name: counts[name] / busy * 100 for name, _ in LAYERS}
    shares["idle"] = idle / (busy + idle) * 100
    return shares


def profile(sessions: int, seconds: float, transport: str = "native") -> dict[str, Any]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    os.sched_setaffinity(0, {1})
    process, address = bench_grpc.start_server(transport, cores="0")
    with tempfile.TemporaryDirectory() as folder:
        raw = Path(folder) / "server.txt"
        sampler = subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(process.pid),
                "--format",
                "raw",
                "--output",
                str(raw),
                "--duration",
                str(int(seconds - 4)),
                "--rate",
                "200",
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            cpu = bench_grpc.cpu_seconds(process.pid)
            wall = time.perf_counter()
            row = asyncio.run(bench_grpc.realtime_sessions(address, sessions, seconds))
            row["server_cpu_percent"] = (
                (bench_grpc.cpu_seconds(process.pid) - cpu) / (time.perf_counter() - wall) * 100
            )
            sampler.wait(timeout=60)
            collapsed = raw.read_text()
        finally:
            bench_grpc.stop_server(process)
    return {
        "transport": transport,
        "sessions": sessions,
        "seconds": seconds,
        "load": row,
        "layers": breakdown(collapsed),
        "inclusive": inclusive(collapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--transport", choices=("native", "grpclib"), default="native")
    args = parser.parse_args()
    result = profile(args.sessions, args.seconds, args.transport)
    for name, percent in result["layers"].items():
        print(f"{percent:5.1f} %  {name}")
    for name, percent in result["inclusive"].items():
        print(f"{percent:5.1f} %  {name}")
    load = result["load"]
    print(
        f"p50 {load['p50_ms']:.1f} ms, p99 {load['p99_ms']:.1f} ms, "
        f"server CPU {load['server_cpu_percent']:.0f} % of one core"
    )
    bench.record("profile" if args.transport == "grpclib" else "profile_native", result)


if __name__ == "__main__":
    main()
