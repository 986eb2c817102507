"""VibeVoiceNode in a worker process with its own environment, on a tiny random model.

The model is built by ``make_tiny_vibevoice.py`` in the node's environment, in the same
layout as the converted ``vibevoice/VibeVoice-1.5B-hf``, and loaded by the node's own
loading code. A random model never chooses to speak, so the worker runs
``ScriptedVibeVoiceNode`` (``vibevoice_scripted.py``): the real node with its speech
tokens forced, ``audio_tokens_per_word`` per word, each decoded by the real diffusion
head and acoustic decoder into 3,200 samples at 24 kHz. So every length below is
known exactly. The tests assert what such a model can show (shapes, rates, types,
streaming, cancellation), never what it says.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import trio
from tests.e2e.conftest import (
    ServerFactory,
    chunk,
    init,
    kind,
    manifest,
    raw_stream,
    start_server,
    text_buffer,
)
from tests.models.vibevoice_scripted import ScriptedVibeVoiceNode, ScriptedVibeVoiceParams

from remotemedia.config import NodeDefaults
from remotemedia.environments import Environment
from remotemedia.errors import ModelNotFoundError
from remotemedia.executors.process import (
    ProcessNode,
    WorkerSettings,
    default_namespace,
    new_session_id,
)
from remotemedia.media import Audio, Text
from remotemedia.nodes import builtin_registry
from remotemedia.nodes.tts.vibevoice import (
    VibeVoiceNode,
    VibeVoiceParams,
    VibeVoiceTTSNode,
    sentences,
)
from remotemedia.wav import write_wav

pytestmark = pytest.mark.slow
__all__ = ["start_server"]  # the e2e suite's server fixture, used here

ROOT = Path(__file__).resolve().parents[2]
MAKE_TINY = Path(__file__).resolve().parent / "make_tiny_vibevoice.py"
TIMEOUT = 120.0  # a worker imports torch and transformers (seconds) before it is ready
RATE = 24_000
HOP = 3_200  # samples per speech token (7.5 tokens a second)


@pytest.fixture(scope="module")
def tiny_vibevoice(torch_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random VibeVoice checkpoint in transformers' layout."""
    out = tmp_path_factory.mktemp("tiny-vibevoice") / "vibevoice"
    subprocess.run(
        [str(torch_python), "-W", "error", str(MAKE_TINY), str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


@pytest.fixture
def in_repo_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers start here: ``python -m`` puts their working directory on ``sys.path``,
    which is how they import ``tests.models.vibevoice_scripted``."""
    monkeypatch.chdir(ROOT)


def scripted_node(environment: Environment, **params: Any) -> ProcessNode:
    """A ScriptedVibeVoiceNode in a worker process with the torch environment."""
    node_params = ScriptedVibeVoiceParams(**params)
    return ProcessNode(
        "tts",
        node_params,
        node_class=ScriptedVibeVoiceNode,
        raw_params=attrs.asdict(node_params),
        session_id=new_session_id(),
        settings=WorkerSettings(
            default_namespace(), node_environments={ScriptedVibeVoiceNode.node_type: environment}
        ),
        environment=environment,
    )


async def speak(node: ProcessNode, text: str) -> list[tuple[Audio, float]]:
    """Every result of one text, with the seconds from the input to its arrival."""
    start = trio.current_time()
    results = []
    async with contextlib.aclosing(node.process(Text(text))) as outputs:
        async for item in outputs:
            assert isinstance(item, Audio)
            results.append((item, trio.current_time() - start))
    return results


async def first_results(node: ProcessNode, text: str, count: int) -> list[Audio]:
    """The first ``count`` results of one text; the rest is abandoned."""
    results = []
    async with contextlib.aclosing(node.process(Text(text))) as outputs:
        async for item in outputs:
            results.append(item)
            if len(results) == count:
                break
    return results


async def test_vibevoice_speaks_each_sentence_as_one_24khz_audio_in_a_worker(
    torch_environment: Environment, torch_python: Path, tiny_vibevoice: Path, in_repo_root: None
) -> None:
    node = scripted_node(torch_environment, model=str(tiny_vibevoice), audio_tokens_per_word=2)
    with trio.fail_after(TIMEOUT):
        try:
            started = trio.current_time()
            await node.initialize()
            loaded = trio.current_time() - started
            results = await speak(node, "Hello there. How are you today, my friend?")
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await node.cleanup()
    # Two sentences: 2 and 6 words, 2 speech tokens a word, 3,200 samples a token.
    assert [audio.samples.shape for audio, _ in results] == [(4 * HOP,), (12 * HOP,)]
    for audio, _ in results:
        assert (audio.sample_rate, audio.channels, audio.samples.dtype) == (RATE, 1, np.float32)
        assert np.isfinite(audio.samples).all()
        assert np.abs(audio.samples).max() > 0  # decoded, not padding
    [(_, first), (_, second)] = results
    assert first < second  # each sentence as soon as it is done
    print(f"\nworker ready in {loaded:.2f} s; first audio {first:.3f} s, second {second:.3f} s")
    assert "torch" not in sys.modules  # the test process never imported it
    assert "transformers" not in sys.modules


async def test_vibevoice_speaks_in_the_voice_of_a_wav_sample_at_any_rate(
    torch_environment: Environment,
    torch_python: Path,
    tiny_vibevoice: Path,
    in_repo_root: None,
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(3)
    voice = tmp_path / "voice.wav"  # 16 kHz stereo: mixed down and resampled to 24 kHz
    write_wav(voice, Audio((rng.standard_normal(2 * 16_000) * 0.1).astype(np.float32), 16_000, 2))
    spoken: dict[str | None, list[np.ndarray]] = {}
    for sample in (str(voice), None):
        node = scripted_node(torch_environment, model=str(tiny_vibevoice), voice=sample, seed=7)
        with trio.fail_after(TIMEOUT):
            try:
                await node.initialize()
                spoken[sample] = [
                    audio.samples for audio, _ in await speak(node, "Hello there. Hello there.")
                ]
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    await node.cleanup()
    cloned, plain = spoken[str(voice)], spoken[None]
    assert [s.shape for s in cloned] == [(4 * HOP,), (4 * HOP,)]
    # Seeded before each sentence: the same sentence is the same speech...
    np.testing.assert_array_equal(cloned[0], cloned[1])
    # ...and the voice sample, part of the model's prompt, changes it.
    assert not np.array_equal(cloned[0], plain[0])
    assert "torch" not in sys.modules


@pytest.mark.parametrize(
    "rest",
    [
        pytest.param(" ".join(["word"] * 1000) + ".", id="mid-sentence"),
        pytest.param(" ".join(["Hi there."] * 200), id="between-sentences"),
    ],
)
async def test_vibevoice_stops_within_two_seconds_when_its_input_is_abandoned(
    torch_environment: Environment,
    torch_python: Path,
    tiny_vibevoice: Path,
    in_repo_root: None,
    rest: str,
) -> None:
    # What follows the first sentence is minutes of work at 4 tokens a word: 4,000
    # speech tokens in one sentence, or 200 sentences of 8.
    node = scripted_node(
        torch_environment,
        model=str(tiny_vibevoice),
        audio_tokens_per_word=4,
        max_new_tokens=5_000,
    )
    with trio.fail_after(TIMEOUT):
        try:
            await node.initialize()
            pid = node.pid
            start = trio.current_time()
            [first] = await first_results(node, "Hi. " + rest, 1)  # then a barge-in cuts it
            cut = trio.current_time()
            # The first sentence came while the rest was being generated: streaming.
            assert cut - start < 5.0
            assert isinstance(first, Audio)
            assert first.samples.shape == (4 * HOP,)
            # The next input waits only for the generation to see the stop (one step,
            # or the end of the sentence in hand), then speaks its own 2 words.
            [(again, took)] = await speak(node, "Hi again.")
            assert took < 2.0
            assert again.samples.shape == (8 * HOP,)
            assert (node.pid, node.restarts) == (pid, 0)
            assert node.counts["abandoned_input"] == 1
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await node.cleanup()
    assert "torch" not in sys.modules


# The node's own streaming and stopping, in this process: the model replaced by a
# stand-in that generates in steps and sees the stop between them, as the real one.


class SteppingVoice(VibeVoiceNode):
    """VibeVoiceNode with a stand-in model: 20 steps a word, a sample a step; says
    nothing for a sentence with the word "silence"."""

    def _synthesize(self, sentence: str, stop: threading.Event) -> np.ndarray | None:
        steps = 20 * len(sentence.split())
        for _ in range(steps):
            if stop.wait(0.002):  # one "model step"
                break
        if "silence" in sentence.lower():
            return None
        return np.full(steps, 0.1, np.float32)


async def test_vibevoice_closing_its_results_stops_the_model_before_the_close_returns() -> None:
    node = SteppingVoice("tts", VibeVoiceParams())
    outputs = node.process(Text("Hi. " + " ".join(["word"] * 5_000) + "."))
    assert isinstance(outputs, AsyncGenerator)
    with trio.fail_after(10):
        async with contextlib.aclosing(outputs):
            first = await outputs.__anext__()  # then the caller stops reading
        # The close waited for the generating thread: the next input may use the model.
        assert not [t for t in threading.enumerate() if t.name == "remotemedia-generate"]
    assert isinstance(first, Audio)
    assert (first.samples.size, first.sample_rate) == (20, RATE)


async def test_vibevoice_counts_a_sentence_the_model_says_nothing_for() -> None:
    node = SteppingVoice("tts", VibeVoiceParams())
    outputs = node.process(Text("Hello there. Silence here. Bye."))
    assert isinstance(outputs, AsyncGenerator)
    with trio.fail_after(10):
        results = [item async for item in outputs]
    assert [r.samples.size for r in results if isinstance(r, Audio)] == [40, 20]
    assert node.counts["sentence_without_audio"] == 1


# Errors found before the model loads: in this process, without torch.


async def test_vibevoice_without_a_model_says_where_to_get_one() -> None:
    node = VibeVoiceNode("tts", VibeVoiceParams())
    with pytest.raises(ModelNotFoundError, match=r"params\.model.*vibevoice/VibeVoice-1\.5B-hf"):
        await node.initialize()
    assert "torch" not in sys.modules


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "has no readable config.json"),
        ({"model_type": "vibevoice_streaming"}, "is VibeVoice-Realtime, which transformers"),
        ({"model_type": "qwen2"}, "holds a qwen2, not VibeVoice"),
        (
            {"model_type": "vibevoice", "decoder_config": {}},
            r"is the original VibeVoice checkpoint \(microsoft/VibeVoice-1\.5B\)",
        ),
    ],
)
async def test_vibevoice_refuses_a_folder_that_is_not_the_transformers_checkpoint(
    tmp_path: Path, config: dict[str, Any] | None, message: str
) -> None:
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    node = VibeVoiceNode("tts", VibeVoiceParams(model=str(tmp_path)))
    with pytest.raises(ModelNotFoundError, match=message) as caught:
        await node.initialize()
    assert "hf download vibevoice/VibeVoice-1.5B-hf" in str(caught.value)
    assert "torch" not in sys.modules


@pytest.fixture
def checkpoint_folder(tmp_path: Path) -> Path:
    """A folder that passes the checkpoint check (the load itself would fail)."""
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "vibevoice", "text_config": {}}))
    return folder


async def test_vibevoice_refuses_a_missing_voice_sample_before_loading(
    checkpoint_folder: Path, tmp_path: Path
) -> None:
    params = VibeVoiceParams(model=str(checkpoint_folder), voice=str(tmp_path / "nobody.wav"))
    with pytest.raises(ModelNotFoundError, match=r"voice sample .*nobody\.wav does not exist"):
        await VibeVoiceNode("tts", params).initialize()
    assert "torch" not in sys.modules


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a wav at all", r"params\.voice: .* is not a WAV file .* Give a WAV file\."),
        (None, r"params\.voice: .* holds less than 0\.1 s of audio"),
    ],
)
async def test_vibevoice_refuses_a_voice_sample_it_cannot_use(
    checkpoint_folder: Path, tmp_path: Path, content: bytes | None, message: str
) -> None:
    voice = tmp_path / "voice.wav"
    if content is None:
        write_wav(voice, Audio(np.zeros(100, np.float32), 16_000))
    else:
        voice.write_bytes(content)
    params = VibeVoiceParams(model=str(checkpoint_folder), voice=str(voice))
    with pytest.raises(ValueError, match=message):
        await VibeVoiceNode("tts", params).initialize()
    assert "torch" not in sys.modules


def test_vibevoice_params_refuse_an_unknown_device() -> None:
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda, mps"):
        VibeVoiceParams(device="tpu")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello there. How are you?  Fine!", ["Hello there.", "How are you?", "Fine!"]),
        ("One line\nanother line", ["One line", "another line"]),
        ("你好。我很好\uff01", ["你好。", "我很好\uff01"]),
        ("3.5 percent... of it", ["3.5 percent...", "of it"]),
        ("  ...  !", []),
    ],
)
def test_vibevoice_speaks_text_sentence_by_sentence(text: str, expected: list[str]) -> None:
    assert sentences(text) == expected


def test_vibevoice_keeps_the_original_runtimes_node_type_name() -> None:
    assert VibeVoiceTTSNode.node_type == "VibeVoiceTTSNode"
    assert issubclass(VibeVoiceTTSNode, VibeVoiceNode)
    assert VibeVoiceNode.accepts == {"text"}
    assert VibeVoiceNode.produces == {"audio"}
    assert VibeVoiceNode.environment is not None
    assert any(r.startswith("diffusers") for r in VibeVoiceNode.environment.requirements)


async def test_vibevoice_over_grpc_answers_each_sentence_with_24khz_audio(
    start_server: ServerFactory,
    model_node_config: dict[str, NodeDefaults],
    tiny_vibevoice: Path,
    in_repo_root: None,
) -> None:
    registry = builtin_registry()
    registry.register(ScriptedVibeVoiceNode)
    base = model_node_config["VibeVoiceNode"]
    config = {
        **model_node_config,
        "ScriptedVibeVoiceNode": NodeDefaults(
            params={"model": str(tiny_vibevoice)},
            python=base.python,
            requirements=base.requirements,
        ),
    }
    with trio.fail_after(TIMEOUT):
        address = await start_server(registry=registry, node_config=config)
        async with raw_stream(address) as stream:
            await stream.open_session(init(manifest([("voice", "ScriptedVibeVoiceNode", {})])))
            await stream.send(chunk(text_buffer("Hello there. How are you today?"), 0, "voice"))
            await stream.end()
            responses = await stream.recv_all()
            await stream.finish()
    audio = [
        r.result.data_outputs["voice"].audio
        for r in responses
        if kind(r) == "result" and "voice" in r.result.data_outputs
    ]
    # Two words and four words, two speech tokens each, 3,200 samples a token.
    assert [(a.sample_rate, a.num_samples) for a in audio] == [(24_000, 12_800), (24_000, 25_600)]
    assert "torch" not in sys.modules
