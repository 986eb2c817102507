"""Capacity by `remotemedia loadtest --find-capacity`: one server; HAProxy and three replicas.

Run through scripts/bench.py (`python3 scripts/bench.py capacity`). Everything runs
as real processes on this machine: the replicas, HAProxy (deploy/haproxy/haproxy.cfg)
and the load generator, so they share its cores.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HAPROXY_CONFIG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
SERVE = [sys.executable, "-m", "remotemedia", "serve"]
STEP = re.compile(r"^(\d+) sessions: p99 ([\d.na]+) ms, (\d+) failed")


def loadtest_args(address: str, duration: float) -> list[str]:
    """The loadtest command line (as recorded in BENCHMARKS.md), against ``address``."""
    return [
        *("remotemedia", "loadtest", "--server", address, "--manifest", "vad"),
        *("--realtime", "--duration", f"{duration:g}", "--sessions", "10"),
        *("--find-capacity", "--p99-ms", "50", "--ramp", "2"),
    ]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def _process(
    command: list[str], env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after 30 s")


def _find(address: str, duration: float) -> dict[str, Any]:
    args = loadtest_args(address, duration)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "remotemedia", *args[1:]],
        capture_output=True,
        text=True,
        check=False,
    )
    steps = [
        {"sessions": int(m[1]), "p99_ms": float(m[2]), "failed": int(m[3])}
        for line in done.stderr.splitlines()
        if (m := STEP.match(line.strip()))
    ]
    found = re.search(r"capacity: (\d+) sessions", done.stdout)
    return {
        "command": " ".join(args).replace(address, "ADDRESS"),
        "capacity": int(found[1]) if found else 0,
        "steps": steps,
        "seconds": time.monotonic() - started,
    }


def _replica(stack: ExitStack) -> str:
    port = _free_port()
    stack.enter_context(_process([*SERVE, "--bind", f"127.0.0.1:{port}", "--drain-delay", "3"]))
    _wait_listening(port)
    return f"127.0.0.1:{port}"


def bench_capacity(quick: bool) -> dict[str, Any]:
    """Capacity against one server, then against HAProxy with three replicas."""
    duration = 4.0 if quick else 10.0
    result: dict[str, Any] = {}
    with ExitStack() as stack:
        result["one_server"] = _find(_replica(stack), duration)
    haproxy = shutil.which("haproxy", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if haproxy is None:
        result["haproxy"] = {"skipped": "haproxy is not installed"}
        return result
    with ExitStack() as stack:
        replicas = [_replica(stack) for _ in range(3)]
        bind = _free_port()
        env = {
            **os.environ,
            "REMOTEMEDIA_LB_BIND": f"127.0.0.1:{bind}",
            "REMOTEMEDIA_LB_STATS": f"127.0.0.1:{_free_port()}",
            **{f"REMOTEMEDIA_REPLICA_{i + 1}": address for i, address in enumerate(replicas)},
        }
        stack.enter_context(_process([haproxy, "-db", "-f", str(HAPROXY_CONFIG)], env=env))
        _wait_listening(bind)
        time.sleep(2.5)  # HAProxy's first health checks (every 1 s, UP after 2)
        result["haproxy"] = _find(f"127.0.0.1:{bind}", duration)
    return result


if __name__ == "__main__":
    import json

    print(json.dumps(bench_capacity("quick" in sys.argv), indent=2))
