"""The Prometheus rules and the Grafana dashboard, checked by the real tools.

promtool checks ``deploy/prometheus/rules.yml`` and runs its unit tests
(``rules_test.yml``, one per alert); then a real Prometheus scrapes a real
``remotemedia serve`` while sessions transcribe speech, evaluates the rules, and
answers every query of the dashboard.
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio

from remotemedia import Json
from remotemedia.cli.run import split_chunks
from remotemedia.client import open_trio_client
from remotemedia.testing import synthesize_speech
from tests.processes import free_port, reap, require_program, server_process

pytestmark = pytest.mark.slow

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
DASHBOARD = DEPLOY / "grafana" / "remotemedia.json"
SENTENCES = (
    "The weather is lovely today.",
    "Please send me the report tomorrow.",
    "We will meet at the station at noon.",
)


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = require_program("promtool", "the rules are checked by Prometheus's own tool")
    return subprocess.run(
        [promtool, *args], cwd=RULES.parent, capture_output=True, text=True, check=False
    )


def test_promtool_accepts_the_rules() -> None:
    checked = _promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


def test_promtool_unit_tests_of_every_alert_pass() -> None:
    tested = _promtool("test", "rules", "rules_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {
        rule["alert"]
        for group in _yaml(RULES)["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    tested_alerts = {
        case["alertname"]
        for test in _yaml(RULES.parent / "rules_test.yml")["tests"]
        for case in test.get("alert_rule_test", [])
    }
    assert alerts == tested_alerts  # every alert has a unit test


def test_promtool_catches_a_broken_rule(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text(RULES.read_text().replace("> 1", "> > 1", 1))
    checked = _promtool("check", "rules", str(broken))
    assert checked.returncode != 0  # the check can fail: it is not a rubber stamp


def _yaml(path: Path) -> Any:
    import yaml

    return yaml.safe_load(path.read_text())


async def _transcribe(address: str, pace: float) -> int:
    """Stream the sentences (``pace`` times real time); how many transcripts came back."""
    sample = synthesize_speech(SENTENCES, gap_s=1.2, lead_s=0.3, tail_s=1.0)
    transcripts = 0
    async with open_trio_client(address) as client, client.stream("transcribe") as session:

        async def feed() -> None:
            start = trio.current_time()
            for index, chunk in enumerate(split_chunks(sample.audio, 20.0)):
                await trio.sleep_until(start + index * 0.02 / pace)
                await session.send(chunk)
            await session.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            async for result in session:
                if isinstance(result.data, Json) and "text" in result.data.value:
                    transcripts += 1
    return transcripts


def _query(port: int, expr: str) -> list[dict[str, Any]]:
    """Run an instant query on the Prometheus at ``port``; its result vector."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as reply:
        answer = json.loads(reply.read())
    assert answer["status"] == "success", (expr, answer)
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


async def _until_answered(port: int, expr: str) -> list[dict[str, Any]]:
    """Query until the answer has a series whose value is a number (scrapes take a while)."""
    while True:
        try:
            result = await trio.to_thread.run_sync(_query, port, expr)
        except OSError:
            result = []  # not listening yet
        if any(series["value"][1] not in ("NaN", "+Inf") for series in result):
            return result
        await trio.sleep(0.5)


def _dashboard_queries() -> list[str]:
    """Every panel's query, with Grafana's variables as Prometheus would get them."""
    document = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in document["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$pipeline", ".*")
            queries.append(expr)
    return queries


async def test_a_real_prometheus_scrapes_a_loaded_server_and_the_rules_and_dashboard_answer(
    tmp_path: Path,
) -> None:
    prometheus = require_program("prometheus", "a real Prometheus scrapes the server")
    with trio.fail_after(150), (tmp_path / "prometheus.log").open("w") as log:
        async with server_process("--metrics-port", "0", "--log-level", "warning") as (
            _,
            address,
            metrics_port,
        ):
            web = free_port()
            config = tmp_path / "prometheus.yml"
            config.write_text(
                json.dumps(
                    {
                        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                        "rule_files": [str(RULES)],
                        "scrape_configs": [
                            {
                                "job_name": "remotemedia",
                                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                            }
                        ],
                    }
                )
            )
            process = await trio.lowlevel.open_process(
                [
                    prometheus,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{web}",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
            try:
                # It scrapes the server before the first turn, so rates see every one.
                await _until_answered(web, 'up{job="remotemedia"} == 1')
                async with trio.open_nursery() as nursery:  # two sessions at once: load
                    counts: list[int] = []

                    async def session() -> None:
                        counts.append(await _transcribe(address, pace=2.0))

                    for _ in range(2):
                        nursery.start_soon(session)
                assert counts == [len(SENTENCES)] * 2
                turns = await _until_answered(
                    web, f'remotemedia_turns_total{{pipeline="transcribe"}} >= {2 * len(SENTENCES)}'
                )
                assert turns[0]["metric"]["outcome"] == "transcribed"
                # The recording rules were evaluated over the real series.
                p95 = await _until_answered(
                    web, 'remotemedia:turn_latency_seconds:p95_5m{until="transcript"}'
                )
                assert 0 < float(p95[0]["value"][1]) < 10
                stages = await _until_answered(web, "remotemedia:turn_stage_seconds:p50_5m")
                assert {series["metric"]["stage"] for series in stages} >= {"vad", "transcribe"}
                # Every dashboard query is valid PromQL for this Prometheus, and the
                # turn panels find data.
                answered = {}
                for expr in _dashboard_queries():
                    answered[expr] = await trio.to_thread.run_sync(_query, web, expr)
                turn_panels = [e for e in answered if "remotemedia_turn_latency_seconds" in e]
                assert turn_panels
                assert all(answered[e] for e in turn_panels), turn_panels
            finally:
                process.terminate()
                with trio.move_on_after(10):
                    await process.wait()
                await reap(process)
