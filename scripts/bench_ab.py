"""A/B: the hop and gRPC benchmarks of this tree against an earlier revision, alternating.

A refactoring must not cost speed; on a shared, noisy machine two runs an hour apart
differ more than the change. So both trees run here, round after round, one right
after the other (B, A, B, A, ...), each benchmark in a process of its own with its
tree's ``src`` first on ``PYTHONPATH``, and the report gives each figure's median
per tree and their ratio.

    python3 scripts/bench.py ab                      # against AB_BASE (default: HEAD~2)
    AB_BASE=bb6954c AB_ROUNDS=3 python3 scripts/bench.py ab
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _run(tree: Path, name: str) -> dict[str, Any]:
    """One quick run of benchmark ``name`` on ``tree``'s code."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    completed = subprocess.run(
        [sys.executable, str(tree / "scripts" / "bench.py"), "--child", name, "quick"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=tree,
    )
    if completed.returncode:
        sys.stderr.write(completed.stderr)
        raise SystemExit(f"benchmark {name} on {tree} failed")
    result: dict[str, Any] = json.loads(completed.stdout.splitlines()[-1])
    return result


def _figures(name: str, result: dict[str, Any]) -> dict[str, float]:
    """The figures compared: throughput up is better, latency and CPU down."""
    if name == "hop":
        return {
            f"hop {length} nodes, frames/s": chain["frames_per_s"]
            for length, chain in result["chains"].items()
        }
    figures = {}
    for transport, r in result["transports"].items():
        figures[f"{transport}: round trip p50, ms"] = r["round_trip"]["p50_ms"]
        figures[f"{transport}: chunks/s, one stream"] = r["round_trip"]["chunks_per_s"]
        figures[f"{transport}: sessions opened/s"] = r["sessions"]["sessions_per_s"]
        forty = next(row for row in r["realtime_one_core"] if row["sessions"] == 40)
        figures[f"{transport}: 40 real-time sessions, server on one core, p99 ms"] = forty["p99_ms"]
        figures[f"{transport}: 40 real-time sessions, server CPU %"] = forty["server_cpu_percent"]
    return figures


def _short(revision: str) -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", revision],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def bench_ab(quick: bool) -> dict[str, Any]:
    """Run hop and gRPC on this tree and on ``AB_BASE``, alternating; medians and ratios."""
    base = os.environ.get("AB_BASE", "HEAD~2")
    rounds = int(os.environ.get("AB_ROUNDS", "2" if quick else "3"))
    revision = subprocess.run(
        ["git", "rev-parse", "--short", base], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    samples: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    with tempfile.TemporaryDirectory() as folder:
        before = Path(folder) / "before"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(before), revision],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            for round_ in range(rounds):
                for label, tree in (("after", ROOT), ("before", before)):
                    for name in ("hop", "grpc"):
                        print(f"  round {round_ + 1}/{rounds}: {name} {label}", flush=True)
                        for key, value in _figures(name, _run(tree, name)).items():
                            samples[label].setdefault(key, []).append(value)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False
            )
    rows = []
    for key, values in samples["after"].items():
        after = statistics.median(values)
        before_values = samples["before"][key]
        earlier = statistics.median(before_values)
        rows.append(
            {
                "figure": key,
                "before": earlier,
                "after": after,
                "ratio": after / earlier if earlier else float("nan"),
                "runs": len(values),
                "before_range": [min(before_values), max(before_values)],
                "after_range": [min(values), max(values)],
                # The runs of the two trees overlap: the change is within the noise.
                "overlap": min(values) <= max(before_values) and min(before_values) <= max(values),
            }
        )
    return {"base": revision, "head": head, "rounds": rounds, "rows": rows}


def render_ab(r: dict[str, Any]) -> list[str]:
    """The A/B table for BENCHMARKS.md."""
    lines = [
        f"This tree (`{r['head']}`, or its working copy) against `{r['base']}`, "
        f"{r['rounds']} alternating rounds of the quick hop and gRPC benchmarks "
        "(`python3 scripts/bench.py ab`); medians per tree, and the range of each "
        "tree's runs. Throughput: higher is better; latency and CPU: lower. *Within "
        "noise*: the two trees' runs overlap (on this shared machine a figure may move "
        "by more than its change from one run to the next).",
        "",
        "| figure | before (range) | after (range) | after/before | within noise |",
        "|---|---:|---:|---:|:---:|",
    ]
    for row in r["rows"]:
        spans = [row.get(f"{side}_range") for side in ("before", "after")]
        cells = [
            f"{row[side]:,.1f}" + (f" ({span[0]:,.1f}-{span[1]:,.1f})" if span else "")
            for side, span in zip(("before", "after"), spans, strict=True)
        ]
        noise = {True: "yes", False: "**no**"}.get(row.get("overlap"), "")
        ratio = f"{row['ratio']:.2f}"
        lines.append(f"| {row['figure']} | {cells[0]} | {cells[1]} | {ratio} | {noise} |")
    return lines
