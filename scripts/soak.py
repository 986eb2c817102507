"""Soak: sessions with random fault plans against one server, resources sampled each second.

    python3 scripts/tasks.py soak [--minutes 10] [--seed 1]

One real gRPC server runs in this process (so fault plans reach it), its FaultUpper
node in worker processes. Sessions open and close one after another, each under a
plan drawn from its seed (worker, shared-memory, link and transport faults); every
trace is checked against the guarantees. Once a second the process's RSS, open file
descriptors, threads, worker processes and shared-memory files are sampled. The
result (medians of the first and last quarter, after a warm-up) goes into
BENCHMARKS.json/BENCHMARKS.md under "soak".
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.faults (the scenario nodes) and bench (the report)

from tests.faults import scenarios as catalogue  # noqa: E402
from tests.faults.nodes import registry  # noqa: E402

import bench  # noqa: E402
from remotemedia.config import ServerConfig  # noqa: E402
from remotemedia.executors.process import default_namespace  # noqa: E402
from remotemedia.faults import ActionKind, FaultPlan, Site  # noqa: E402
from remotemedia.testing._grpc_wire import serving  # noqa: E402
from remotemedia.testing.faults import (  # noqa: E402
    FaultSwitch,
    Scenario,
    stream_scenario,
    violations,
    worker_pids,
)

METRICS = ("rss_mb", "rss_anon_mb", "rss_shmem_mb", "fds", "threads", "workers", "shm_files")

WARM_UP_S = 30.0
"""Seconds before the first-quarter window starts (models, caches, allocator pools)."""

# Faults that would end the soak's one server or hold a session for its limits.
ACTIONS = tuple(
    kind
    for kind in ActionKind
    if kind not in (ActionKind.SIGTERM_SERVER, ActionKind.STALL, ActionKind.HANG)
)
SITES = (*catalogue.WORKER_SITES, Site.GRPC_RECEIVE, Site.GRPC_SEND, Site.ADMISSION)


def sample() -> dict[str, float]:
    """This process's resources now."""
    status = _status()
    return {
        "rss_mb": status["VmRSS"] / 1024,
        # Anonymous memory (the heap) apart from mapped shared memory (iceoryx2's
        # segments count in RSS once touched): a growth shows which it is.
        "rss_anon_mb": status["RssAnon"] / 1024,
        "rss_shmem_mb": status["RssShmem"] / 1024,
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": status["Threads"],  # native ones too (iceoryx2, asyncio's executor)
        "workers": len(worker_pids()),
        "shm_files": len(default_namespace().files()),
    }


def _status() -> dict[str, int]:
    """The numeric fields of /proc/self/status (kB for memory)."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            fields[name] = int(parts[0])
    return fields


def scenario(seed: int) -> Scenario:
    plan = FaultPlan.random(
        seed, sites=SITES, actions=ACTIONS, node_ids=("upper",), faults=1 + seed % 2
    )
    return Scenario(
        f"soak-{seed}",
        catalogue.CHAIN,
        catalogue.INPUTS,
        plan,
        transport="grpc",
        process_types=catalogue.WORKER,
        registry=registry(),
    )


async def soak(minutes: float, first_seed: int) -> dict[str, Any]:
    config = ServerConfig(
        bind="127.0.0.1:0",
        limits=catalogue.SCENARIO_LIMITS,
        executors=dict.fromkeys(catalogue.WORKER, "process"),
        workers=catalogue.FAST_WORKERS,
    )
    samples: list[tuple[float, dict[str, float]]] = []
    sessions = failures = 0
    problems: list[str] = []
    steps: list[str] = []
    started = trio.current_time()
    switch = FaultSwitch()
    async with (
        serving(config, registry(), switch.seams) as address,
        trio.open_nursery() as nursery,
    ):

        async def sampler() -> None:
            while True:
                samples.append((trio.current_time() - started, sample()))
                await trio.sleep(1.0)

        nursery.start_soon(sampler)
        clean = Scenario("soak-baseline", catalogue.CHAIN, catalogue.INPUTS, registry=registry())
        baseline = await stream_scenario(address, clean, switch)
        seed = first_seed
        while trio.current_time() - started < minutes * 60:
            current = scenario(seed)
            before = sample()["rss_mb"]
            trace = await stream_scenario(address, current, switch)
            grown = sample()["rss_mb"] - before
            if grown > 10:  # a step, not a drift: say which session made it
                steps.append(f"{current.name} ({current.plan}): RSS +{grown:.0f} MB")
            found = violations(trace, baseline)
            sessions += 1
            if found:
                failures += 1
                problems.append(f"{current.name} ({current.plan}): {found[0]}")
            seed += 1
            if sessions % 50 == 0:
                print(
                    f"  {sessions} sessions, {failures} broke a guarantee; {samples[-1][1]}",
                    flush=True,
                )
        nursery.cancel_scope.cancel()
    result = summarize(samples, minutes, sessions, failures, problems, first_seed)
    result["rss_steps"] = steps
    return result


def summarize(
    samples: list[tuple[float, dict[str, float]]],
    minutes: float,
    sessions: int,
    failures: int,
    problems: list[str],
    first_seed: int,
) -> dict[str, Any]:
    """Medians of the first and last quarter after the warm-up, and the growth between."""
    warm = [values for at, values in samples if at >= min(WARM_UP_S, minutes * 60 / 4)]
    quarter = max(1, len(warm) // 4)
    first, last = warm[:quarter], warm[-quarter:]
    metrics = {}
    for key in METRICS:
        a = statistics.median(v[key] for v in first)
        b = statistics.median(v[key] for v in last)
        growth = (b - a) / a * 100 if a else (0.0 if b == a else float("inf"))
        peak = max(v[key] for v in warm)
        metrics[key] = {"first": a, "last": b, "growth_percent": growth, "peak": peak}
    return {
        "minutes": minutes,
        "sessions": sessions,
        "failures": failures,
        "problems": problems[:10],
        "first_seed": first_seed,
        "samples": len(samples),
        "metrics": metrics,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1, help="the first session's seed")
    args = parser.parse_args()
    # Every fault logs, and asyncio warns of each write to a dropped connection.
    for name in ("remotemedia", "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    print(f"==> soak: {args.minutes:g} minutes from seed {args.seed}", flush=True)
    started = time.perf_counter()
    result = trio.run(soak, args.minutes, args.seed)
    print(f"==> {result['sessions']} sessions in {time.perf_counter() - started:.0f} s")
    for key, values in result["metrics"].items():
        print(
            f"  {key}: {values['first']:g} -> {values['last']:g} "
            f"({values['growth_percent']:+.1f} %), peak {values['peak']:g}"
        )
    bench.record("soak", result)
    sys.exit(1 if result["failures"] else 0)


if __name__ == "__main__":
    main()
