"""The bundled model pipelines with real models in real worker processes."""

from __future__ import annotations

import pytest
import trio

from remotemedia import Audio, Json, Text, open_pipeline
from remotemedia.executors.process import default_namespace
from remotemedia.nodes.tts.piper import PiperParams, PiperTTSNode
from remotemedia.testing import word_error_rate
from tests.processes import worker_pids

pytest.importorskip("piper", reason="needs remotemedia[piper]")
pytest.importorskip("faster_whisper", reason="needs remotemedia[whisper]")

pytestmark = pytest.mark.slow

SENTENCE = "The quick brown fox jumps over the lazy dog, then it runs into the forest."


async def test_speak_runs_piper_in_a_worker_and_returns_speech() -> None:
    with trio.fail_after(60):
        async with open_pipeline("speak") as pipeline:
            assert len(worker_pids()) == 1  # Piper was started in its own process
            await pipeline.send(Text("Hello there. How are you?"))
            await pipeline.send_eof()
            results = [r async for r in pipeline]
    assert all(r.error is None for r in results)
    audio = [r.data for r in results if isinstance(r.data, Audio)]
    seconds = sum(a.samples.size for a in audio) / audio[0].sample_rate
    assert 1.0 < seconds < 5.0  # two short sentences of speech
    assert worker_pids() == set()
    assert default_namespace().files() == []


async def test_loopback_speaks_and_transcribes_through_two_workers() -> None:
    with trio.fail_after(90):
        async with open_pipeline("loopback") as pipeline:
            assert len(worker_pids()) == 2  # Piper and Whisper
            await pipeline.send(Text(SENTENCE))
            await pipeline.send_eof()
            results = [r async for r in pipeline]
    assert [r.error for r in results if r.error is not None] == []
    # One transcript per utterance the VAD found (Piper's pause at the comma may split it).
    transcript = " ".join(r.data.value["text"] for r in results if isinstance(r.data, Json))
    assert word_error_rate(SENTENCE, transcript) <= 0.2
    # Piper's speech comes back too, through the `speech` PassThrough.
    speech = [r.data for r in results if r.node_id == "speech"]
    assert speech
    assert all(isinstance(a, Audio) for a in speech)
    assert {r.node_id for r in results} == {"speech", "whisper"}
    assert worker_pids() == set()
    assert default_namespace().files() == []


async def test_piper_speaks_a_sentence_too_long_for_the_model_in_parts() -> None:
    # 120 characters of numbered words: about 670 phonemes, far more than 120 letters
    # of prose; the model's memory follows the phonemes.
    text = " ".join(f"w{i:06d}" for i in range(15))
    node = PiperTTSNode("tts", PiperParams(variation=False, max_phonemes=200))
    with trio.fail_after(60):
        await node.initialize()
        parts = [audio async for audio in node.process(Text(text))]
    assert len(parts) >= 4
    seconds = sum(audio.duration for audio in parts)
    assert 20 < seconds < 60  # "double-u zero zero zero zero zero one", fifteen times
