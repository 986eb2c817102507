"""Write deploy/grafana/remotemedia.json, the Grafana dashboard, from the panels below.

    python3 scripts/gen_dashboard.py          # rewrite the file
    python3 scripts/gen_dashboard.py --check  # exit 1 if the file is not what this writes

Kept as code so a panel is a few lines to add or change, and the JSON (which Grafana
imports as is: Dashboards > New > Import) never drifts from it: a unit test runs
``--check``, and tests/integration/test_prometheus.py runs every panel's query against
a real Prometheus that scraped a real server.

The dashboard answers "why was that turn slow": the waits a user feels (end of speech
-> transcript, first reply text, first reply audio) at p50/p95, then the same turns
broken down by stage, then what the stages stand on (queue waits beside processing
time per node type, worker round trips and restarts), then the server's load
(sessions, refusals, drain).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "deploy" / "grafana" / "remotemedia.json"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
PIPELINE = 'pipeline=~"$pipeline"'
WIDTH = 24


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref}


class _Layout:
    """Panels placed left to right, wrapping at the dashboard's width; rows between."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = self.y = 0
        self.row_height = 0

    def _place(self, width: int, height: int) -> dict[str, int]:
        if self.x + width > WIDTH:
            self.x, self.y = 0, self.y + self.row_height
            self.row_height = 0
        place = {"h": height, "w": width, "x": self.x, "y": self.y}
        self.x += width
        self.row_height = max(self.row_height, height)
        return place

    def row(self, title: str) -> None:
        if self.x:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        self.panels.append(
            {
                "id": len(self.panels) + 1,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def panel(
        self,
        title: str,
        description: str,
        targets: list[tuple[str, str]],
        *,
        unit: str = "s",
        kind: str = "timeseries",
        width: int = 12,
        height: int = 8,
        stack: bool = False,
    ) -> None:
        custom: dict[str, Any] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10}
        if stack:
            custom.update({"stacking": {"mode": "normal", "group": "A"}, "fillOpacity": 60})
        panel: dict[str, Any] = {
            "id": len(self.panels) + 1,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DATASOURCE,
            "gridPos": self._place(width, height),
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom"}},
            "targets": [
                _target(expr, legend, chr(ord("A") + index))
                for index, (expr, legend) in enumerate(targets)
            ],
        }
        if kind == "timeseries":
            panel["fieldConfig"]["defaults"]["custom"] = custom
        else:
            panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}
        self.panels.append(panel)


def _quantile(q: float, metric: str, by: str, where: str = PIPELINE) -> str:
    return (
        f"histogram_quantile({q}, sum by ({by}, le) "
        f"(rate({metric}_bucket{{{where}}}[$__rate_interval])))"
    )


def panels() -> list[dict[str, Any]]:
    """Every panel of the dashboard, in order."""
    layout = _Layout()
    layout.row("Turns: what the user waits for")
    for q, label in ((0.5, "p50"), (0.95, "p95")):
        layout.panel(
            f"End of speech to transcript, first reply text, first reply audio ({label})",
            "From the end of the user's speech, as the VAD placed it, until each moment "
            "(remotemedia_turn_latency_seconds).",
            [
                (
                    _quantile(q, "remotemedia_turn_latency_seconds", "pipeline, until"),
                    "{{pipeline}}: {{until}}",
                )
            ],
        )
    layout.panel(
        "Where a turn's time went (p50 by stage)",
        "Each stage from the one before, so they stack up to end of speech -> first reply "
        "audio: vad (end of speech -> the VAD's report), transcribe (-> final transcript), "
        "reply_text, reply_audio (remotemedia_turn_stage_seconds).",
        [
            (
                _quantile(
                    0.5,
                    "remotemedia_turn_stage_seconds",
                    "stage",
                    f'{PIPELINE}, stage!="interrupt"',
                ),
                "{{stage}}",
            )
        ],
        stack=True,
    )
    layout.panel(
        "Stages at p95, and barge-in",
        "The slow turns' stages; interrupt is the user's speech start -> interrupted.",
        [(_quantile(0.95, "remotemedia_turn_stage_seconds", "stage"), "{{stage}}")],
    )
    layout.panel(
        "Turns by outcome",
        "Turns ended a second: transcribed (no reply expected), replied, interrupted, "
        "failed, unanswered.",
        [
            (
                f"sum by (outcome) (rate(remotemedia_turns_total{{{PIPELINE}}}[$__rate_interval]))",
                "{{outcome}}",
            )
        ],
        unit="ops",
        width=8,
    )
    layout.panel(
        "Speculation",
        "Transcripts by speculation outcome: hit (the transcript was ready at the end of "
        "speech), miss, off.",
        [
            (
                "sum by (speculation) (rate(remotemedia_turn_stage_seconds_count"
                f'{{{PIPELINE}, stage="transcribe"}}[$__rate_interval]))',
                "{{speculation}}",
            )
        ],
        unit="ops",
        width=8,
    )
    layout.panel(
        "Wasted work",
        "Speculative transcripts cancelled (speech went on) and replies cut by the user.",
        [
            (
                "sum by (kind) (rate(remotemedia_turn_wasted_total"
                f"{{{PIPELINE}}}[$__rate_interval]))",
                "{{kind}}",
            )
        ],
        unit="ops",
        width=8,
    )

    layout.row("Nodes and workers: what the stages stand on")
    layout.panel(
        "Queue wait vs processing (p95 by node type)",
        "Waiting in a node's inbox means the node (or one after it) is the bottleneck; "
        "processing is the node's own time.",
        [
            (
                _quantile(0.95, "remotemedia_node_queue_wait_seconds", "node_type", ""),
                "wait {{node_type}}",
            ),
            (
                _quantile(0.95, "remotemedia_node_processing_seconds", "node_type", ""),
                "processing {{node_type}}",
            ),
        ],
    )
    layout.panel(
        "Worker round trip and hop (p95)",
        "Round trip: input sent to a worker process -> its end of input. Hop: what the "
        "worker process added (the round trip minus the node's own work).",
        [
            (
                _quantile(0.95, "remotemedia_worker_round_trip_seconds", "node_type", ""),
                "round trip {{node_type}}",
            ),
            (
                _quantile(0.95, "remotemedia_worker_hop_seconds", "node_type", ""),
                "hop {{node_type}}",
            ),
        ],
    )
    layout.panel(
        "Worker restarts",
        "Workers replaced in the last 10 minutes: failed (crashed, hung) or memory "
        "(outgrew --worker-max-rss-mb).",
        [
            (
                "sum by (node_type, reason) (increase(remotemedia_worker_restarts_total[10m]))",
                "{{node_type}} {{reason}}",
            )
        ],
        unit="short",
    )
    layout.panel(
        "Items waiting in node inputs",
        "Summed over live sessions, by node type (remotemedia_edge_queue_depth).",
        [("sum by (node_type) (remotemedia_edge_queue_depth)", "{{node_type}}")],
        unit="short",
    )

    layout.row("Server: sessions, refusals, drain")
    layout.panel(
        "Live sessions",
        "StreamPipeline sessions now, per server.",
        [("sum by (instance) (remotemedia_grpc_active_streams)", "{{instance}}")],
        unit="short",
        width=8,
    )
    layout.panel(
        "Sessions refused",
        "Refused at admission: full (--max-sessions) or draining.",
        [
            (
                "sum by (reason) (rate(remotemedia_sessions_refused_total[$__rate_interval]))",
                "{{reason}}",
            )
        ],
        unit="ops",
        width=8,
    )
    layout.panel(
        "Draining",
        "Servers shutting down (1): health says NOT_SERVING and new sessions are refused.",
        [("sum(remotemedia_draining)", "draining servers")],
        unit="short",
        kind="stat",
        width=8,
    )
    layout.panel(
        "Chunk latency (p99) and dropped chunks",
        "An input chunk's arrival to its first result; chunks dropped by reason.",
        [
            (
                "histogram_quantile(0.99, sum by (le) "
                "(rate(remotemedia_stream_chunk_latency_seconds_bucket[$__rate_interval])))",
                "p99 chunk latency",
            ),
            (
                "sum by (reason) (rate(remotemedia_stream_chunks_dropped_total[$__rate_interval]))",
                "dropped {{reason}}",
            ),
        ],
        width=12,
    )
    layout.panel(
        "Errors sent to clients",
        "Typed errors by type (a lost input is NODE_EXECUTION).",
        [
            (
                "sum by (error_type) (rate(remotemedia_execution_errors_total[$__rate_interval]))",
                "{{error_type}}",
            )
        ],
        unit="ops",
        width=12,
    )
    return layout.panels


def dashboard() -> dict[str, Any]:
    """The dashboard, as Grafana imports it."""
    return {
        "title": "remotemedia",
        "uid": "remotemedia",
        "description": "Per-turn latency by stage, nodes and workers, sessions and drain "
        "of remotemedia serve (metrics from --metrics-port).",
        "tags": ["remotemedia", "voice"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                },
                {
                    "name": "pipeline",
                    "label": "Pipeline",
                    "type": "query",
                    "datasource": DATASOURCE,
                    "query": {
                        "query": "label_values(remotemedia_turns_total, pipeline)",
                        "refId": "pipelines",
                    },
                    "definition": "label_values(remotemedia_turns_total, pipeline)",
                    "includeAll": True,
                    "allValue": ".*",
                    "multi": True,
                    "current": {"text": "All", "value": "$__all"},
                    "refresh": 2,
                    "hide": 0,
                },
            ]
        },
        "annotations": {"list": []},
        "panels": panels(),
    }


def render() -> str:
    """The file's text."""
    return json.dumps(dashboard(), indent=2) + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv[1:]:
        if not OUT.exists() or OUT.read_text() != text:
            print(f"{OUT.relative_to(ROOT)} is out of date: run python3 scripts/gen_dashboard.py")
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text)
    print(f"wrote {OUT.relative_to(ROOT)} ({len(panels())} panels)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
