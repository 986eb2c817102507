"""Turn latency through a real `remotemedia serve`: real models, real gRPC, JSON logs, /metrics.

The client streams speech in real time and measures, for each transcript, the time
from sending the chunk that holds the end of speech (where the VAD placed it: the
transcript's ``end_ms``) to receiving the transcript. The server measures the same
wait from that chunk's *arrival*, as the sum of its stages (``vad`` + ``transcribe``).
The two differ by the loopback hops of one chunk and one result, so they must agree
within ``TOLERANCE_S``; and the server's log lines must say exactly what its
histograms say.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio

from remotemedia import Json
from remotemedia.cli.run import split_chunks
from remotemedia.client import open_trio_client
from remotemedia.testing import synthesize_speech, word_error_rate
from tests.processes import server_process

pytest.importorskip("faster_whisper", reason="needs remotemedia[whisper]")
pytest.importorskip("piper", reason="needs remotemedia[piper]")
pytestmark = pytest.mark.slow

SENTENCES = ("The weather is lovely today.", "Please send me the report tomorrow.")
TOLERANCE_S = 0.1
"""How far the client's wait may be from the server's stages: one chunk's way in, one
result's way out, and the client's own scheduling (measured: 2-15 ms on loopback; CI's
two loaded cores run Whisper beside both processes)."""


def _scrape(metrics_port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        body: str = reply.read().decode()
    return body


def _sample(body: str, name: str, **labels: str) -> float:
    """One sample of the exposition, by name and a subset of its labels."""
    for line in body.splitlines():
        match = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if not match or match[1] != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match[2] or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(match[3])
    raise AssertionError(f"no {name}{labels} in /metrics")


async def _converse(address: str) -> list[tuple[float, dict[str, Any]]]:
    """Stream the sentences in real time; each transcript with the client's wait for it."""
    sample = synthesize_speech(SENTENCES, gap_s=1.5, lead_s=0.3, tail_s=1.2)
    sent: list[tuple[float, float]] = []  # (stream ms at the chunk's end, when it was sent)
    waits: list[tuple[float, dict[str, Any]]] = []
    async with open_trio_client(address) as client, client.stream("transcribe") as session:

        async def feed() -> None:
            stream_ms, start = 0.0, trio.current_time()
            for index, chunk in enumerate(split_chunks(sample.audio, 20.0)):
                await trio.sleep_until(start + index * 0.02)  # real time
                await session.send(chunk)
                stream_ms += chunk.duration * 1000
                sent.append((stream_ms, trio.current_time()))
            await session.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            async for result in session:
                data = result.data
                if isinstance(data, Json) and "text" in data.value and "end_ms" in data.value:
                    end_ms = data.value["end_ms"]
                    sent_at = next(at for ms, at in sent if ms >= end_ms)
                    waits.append((trio.current_time() - sent_at, data.value))
    return waits


async def test_turn_stages_add_up_to_what_the_client_waited_and_logs_match_metrics(
    tmp_path: Path,
) -> None:
    log_path = tmp_path / "server.log"
    with trio.fail_after(180), log_path.open("w") as log:
        async with server_process("--metrics-port", "0", "--log-format", "json", stderr=log) as (
            process,
            address,
            metrics_port,
        ):
            assert metrics_port is not None
            waits = await _converse(address)
            body = await trio.to_thread.run_sync(_scrape, metrics_port)
            process.terminate()
            await process.wait()
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    turns = [line for line in lines if line.get("event") == "turn"]
    (end,) = [line for line in lines if line.get("event") == "session_end"]

    # Both sentences transcribed, each a turn of the transcribe pipeline.
    assert len(waits) == len(SENTENCES), waits
    for (_, transcript), sentence in zip(waits, SENTENCES, strict=True):
        assert word_error_rate(sentence, transcript["text"]) <= 0.25, waits
    assert [(t["turn"], t["outcome"]) for t in turns] == [(1, "transcribed"), (2, "transcribed")]
    assert end["pipeline"] == "transcribe"
    assert end["turns"] == {"transcribed": 2}
    assert (end["outcome"], end["lost"], end["session"]) == ("closed", 0, turns[0]["session"])

    # The server's stages add up to the client's wait, within the loopback's hops.
    for (client_wait, _), turn in zip(waits, turns, strict=True):
        stages = turn["stages"]
        assert set(stages) == {"vad", "transcribe"}, turn
        server_wait = stages["vad"] + stages["transcribe"]
        assert server_wait == pytest.approx(turn["latency"]["transcript"], abs=1e-5)
        assert abs(client_wait - server_wait) <= TOLERANCE_S, (client_wait, turn)
        assert server_wait <= client_wait + 0.005  # measured from arrival: never longer

    # The logs say what the histograms say.
    for stage in ("vad", "transcribe"):
        logged = sum(t["stages"][stage] for t in turns)
        labels = {"pipeline": "transcribe", "stage": stage}
        assert _sample(body, "remotemedia_turn_stage_seconds_count", **labels) == 2
        assert _sample(body, "remotemedia_turn_stage_seconds_sum", **labels) == pytest.approx(
            logged, abs=1e-5
        )
    logged_total = sum(t["latency"]["transcript"] for t in turns)
    total = _sample(
        body, "remotemedia_turn_latency_seconds_sum", pipeline="transcribe", until="transcript"
    )
    assert total == pytest.approx(logged_total, abs=1e-5)
    assert _sample(body, "remotemedia_turns_total", outcome="transcribed") == 2
    # Whisper runs in a worker process: its trips are measured too.
    assert _sample(body, "remotemedia_worker_round_trip_seconds_count", node_type="WhisperNode") > 0
    assert _sample(body, "remotemedia_node_queue_wait_seconds_count", node_type="SileroVADNode") > 0
