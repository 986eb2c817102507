"""Speculative transcription through the real server: the bundled transcribe pipeline.

A pause shorter than the VAD's end window but longer than its speculation window
starts a speculation that speech then cancels: the client must get one transcript
of the whole utterance, never the cancelled guess of its first half.
"""

from __future__ import annotations

import re
import urllib.request

import numpy as np
import pytest
import trio

from remotemedia import Audio, Json
from remotemedia.config import ServerConfig
from remotemedia.testing import synthesize_speech, word_error_rate
from remotemedia.transport.serving import serve
from tests.integration.test_worker_faults_grpc import stream
from tests.processes import worker_pids

pytest.importorskip("piper", reason="needs remotemedia[piper]")
pytest.importorskip("faster_whisper", reason="needs remotemedia[whisper]")
pytestmark = pytest.mark.slow

# The two halves of one sentence, 160 ms apart: a pause the VAD hears as about
# 100 ms of silence (it lags the speech), past the 64 ms speculation window and short
# of the 200 ms end.
HALVES = ("I would like to book a table", "for two people tonight.")
PAUSE_MS = 160
AFTER = "That was very helpful."


def _paused_speech() -> Audio:
    """The halves with exactly PAUSE_MS of silence between their audible parts, then AFTER."""
    pieces = []
    for index, text in enumerate((*HALVES, AFTER)):
        sample = synthesize_speech((text,), lead_s=0.3 if index == 0 else 0.0, tail_s=0.0)
        rate = sample.audio.sample_rate
        (segment,) = sample.segments
        start = 0 if index == 0 else int(segment.start_ms * rate / 1000)
        pieces.append(sample.audio.samples[start : int(segment.end_ms * rate / 1000)])
        gap_ms = PAUSE_MS if index == 0 else 1200
        pieces.append(np.zeros(int(gap_ms * rate / 1000), np.float32))
    return Audio(np.concatenate(pieces), rate)


def _speculations(metrics_port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as reply:
        body = reply.read().decode()
    pattern = (
        r'^remotemedia_node_events_total\{node_type="AudioBufferAccumulatorNode",'
        r'event="speculation_(\w+)"\} (\S+)$'
    )
    return {m[1]: float(m[2]) for m in re.finditer(pattern, body, re.MULTILINE)}


async def test_a_cancelled_speculation_never_reaches_the_client() -> None:
    audio = _paused_speech()
    shutdown = trio.Event()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            config = ServerConfig(bind="127.0.0.1:0", metrics_port=0)
            server = await nursery.start(serve, config, shutdown)
            results = await stream(f"{server.host}:{server.port}", audio)
            assert server.metrics_port is not None
            counted = await trio.to_thread.run_sync(_speculations, server.metrics_port)
            shutdown.set()
    assert [r.error for r in results if r.error is not None] == []
    transcripts = [
        r.data.value["text"] for r in results if isinstance(r.data, Json) and "text" in r.data.value
    ]
    # One transcript per utterance: the whole first one, then the second.
    assert len(transcripts) == 2, transcripts
    assert word_error_rate(" ".join(HALVES), transcripts[0]) <= 0.2, transcripts
    assert word_error_rate(AFTER, transcripts[1]) <= 0.2, transcripts
    assert counted.get("cancelled", 0) >= 1, counted  # a speculation was made and cancelled
    assert counted.get("committed", 0) == 2, counted  # each utterance's end committed one
    assert worker_pids() == set()
