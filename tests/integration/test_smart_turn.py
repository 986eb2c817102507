"""SmartTurnNode with the real Smart Turn v3.2 model from the pipecat-ai wheel."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import soxr
import trio

from remotemedia import Audio, Json
from remotemedia.manifest import manifest_from_dict
from remotemedia.nodes import builtin_registry
from remotemedia.nodes.audio.mel import log_mel
from remotemedia.nodes.audio.turn import SmartTurnNode, SmartTurnParams, locate_model
from remotemedia.session import compile_graph, open_session
from remotemedia.testing import TEST_SENTENCES, synthesize_speech

pytest.importorskip("piper", reason="needs remotemedia[piper]")
if locate_model() is None:
    pytest.skip("needs pipecat-ai (python3 scripts/tasks.py install)", allow_module_level=True)
pytestmark = pytest.mark.slow


def test_the_features_are_those_pipecat_computes_for_the_model() -> None:
    # pipecat's own numpy copy of the features, loaded from its file: pipecat itself
    # (and its 25 dependencies) is never imported.
    path = locate_model().parents[1] / "_whisper_features.py"  # type: ignore[union-attr]
    spec = importlib.util.spec_from_file_location("pipecat_features", path)
    assert spec is not None
    assert spec.loader is not None
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    rng = np.random.default_rng(7)
    for seconds in (0.5, 3.0, 9.0):  # shorter than the window, and longer
        audio = (0.1 * rng.standard_normal(int(16_000 * seconds))).astype(np.float32)
        window = np.pad(audio[-128_000:], (max(0, 128_000 - audio.size), 0))
        expected = reference.compute_whisper_log_mel_features(window, do_normalize=True)
        np.testing.assert_allclose(log_mel(audio), expected, atol=1e-6)


async def test_finished_sentences_are_judged_complete() -> None:
    node = SmartTurnNode("turn", SmartTurnParams())
    sample = synthesize_speech(TEST_SENTENCES[:12], gap_s=1.0, lead_s=0.3, tail_s=0.5)
    audio = soxr.resample(sample.audio.samples, sample.audio.sample_rate, 16_000)
    with trio.fail_after(120):
        await node.initialize()
        judged = [
            node.predict(audio[int((s.start_ms - 200) * 16) : int((s.end_ms + 200) * 16)])
            for s in sample.segments
        ]
    # Measured on all 60 sentences: 57 judged complete (BENCHMARKS.md, Turn detection).
    assert sum(p >= 0.5 for p in judged) >= 10, judged


async def test_after_the_vad_it_judges_each_pause_once() -> None:
    manifest = manifest_from_dict(
        {
            "version": "v1",
            "metadata": {"name": "turns"},
            "nodes": [
                {
                    "id": "resample",
                    "node_type": "FastResampleNode",
                    "params": {"target_rate": 16000},
                },
                {
                    "id": "vad",
                    "node_type": "SileroVADNode",
                    "params": {"min_silence_duration_ms": 200, "speculative_silence_ms": 64},
                },
                {"id": "turn", "node_type": "SmartTurnNode"},
            ],
            "connections": [{"from": "resample", "to": "vad"}, {"from": "vad", "to": "turn"}],
        }
    )
    sample = synthesize_speech(TEST_SENTENCES[:3], gap_s=1.0, lead_s=0.3, tail_s=1.0)
    registry = builtin_registry()
    rate, samples = sample.audio.sample_rate, sample.audio.samples
    with trio.fail_after(120):
        async with open_session(compile_graph(manifest, registry), registry) as session:
            step = rate // 50
            for start in range(0, samples.size, step):
                await session.send(Audio(samples[start : start + step], rate))
            await session.send_eof()
            verdicts = [
                r.data.value for r in [r async for r in session] if isinstance(r.data, Json)
            ]
    assert [v["event"] for v in verdicts] == ["pause"] * 3  # the ends confirm those pauses
    for value, segment in zip(verdicts, sample.segments, strict=True):
        assert abs(value["at_ms"] - segment.end_ms) < 150
        assert value["turn_complete"] is (value["probability"] >= 0.5)
    assert sum(v["turn_complete"] for v in verdicts) >= 2
