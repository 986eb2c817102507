"""LFM2AudioNode in a worker process with its own environment (Python 3.12, liquid-audio).

The environment (liquid-audio 1.3.0 and what it pulls: torch, torchaudio,
transformers, about 6 GB) is built once with the project's environment cache, in the
tests' environment folder (see ``conftest.py``), and kept. The tiny models are made
by ``make_tiny_lfm2_audio.py`` with that environment's Python and kept inside the
environment's own folder (``remotemedia-test-models/``, named by the script's hash),
so the random Mimi (about 400 MB) is built once, and goes with the environment.

A random model says nothing sensible: the tests check what such a model can show
(kinds, rates, streaming, the conversation's size, cancellation). The tiny model is
programmed, in a few hand-set weights, to answer audio with text and text with audio,
as the real one does (see ``make_tiny_lfm2_audio.py``).

The conversation's size is observable in the Json status the node sends after each
reply and answers each command with: ``turns`` and ``context_tokens``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import trio
from tests.models import conftest as models

from remotemedia.environments import Environment
from remotemedia.environments.cache import Environments
from remotemedia.environments.interpreters import pythons
from remotemedia.errors import ModelNotFoundError
from remotemedia.executors.process import (
    ProcessNode,
    WorkerSettings,
    default_namespace,
    new_session_id,
)
from remotemedia.media import Audio, Control, Json, RuntimeData, Text
from remotemedia.nodes.lfm2_audio import (
    LIQUID_AUDIO_ENVIRONMENT,
    LFM2AudioNode,
    LFM2AudioParams,
    LFM2Node,
)

pytestmark = pytest.mark.slow

MAKE_TINY = Path(__file__).resolve().parent / "make_tiny_lfm2_audio.py"
TIMEOUT = 180.0  # a worker imports torch and liquid-audio (10 s or more when cold) first
CHUNK = 5 * 1_920  # the default decode_frames, five 80 ms frames at 24 kHz


def python_312() -> str:
    """A Python 3.12 of this machine (liquid-audio needs 3.12 or newer), always the same."""
    found = sorted(i.path for i in pythons() if i.version.startswith("3.12."))
    if not found:
        pytest.skip("needs a Python 3.12 on this machine for the liquid-audio environment")
    return found[0]


@pytest.fixture(scope="session")
def lfm2_audio_environment() -> Environment:
    """The node's own requirements, on this machine's Python 3.12."""
    return Environment(python=python_312(), requirements=LIQUID_AUDIO_ENVIRONMENT.requirements)


@pytest.fixture(scope="session")
def lfm2_audio_python(lfm2_audio_environment: Environment) -> Path:
    """That environment's python, built if need be (minutes, the first time)."""
    return models.ensure(lfm2_audio_environment, "liquid-audio environment")


@pytest.fixture(scope="session")
def tiny_lfm2_audio(lfm2_audio_python: Path) -> Path:
    """A folder with ``mimi/`` (LFM2-Audio's layout) and ``detokenizer/`` (LFM2.5's)."""
    digest = hashlib.sha256(MAKE_TINY.read_bytes()).hexdigest()[:12]
    models_dir = lfm2_audio_python.parent.parent / "remotemedia-test-models"
    root = models_dir / f"lfm2-audio-{digest}"
    for stale in models_dir.glob("lfm2-audio-*"):  # built by an older version of the script
        if stale != root:
            shutil.rmtree(stale, ignore_errors=True)
    for kind in ("mimi", "detokenizer"):
        folder = root / kind
        if folder.is_dir():
            continue
        # Built aside and renamed: a folder that exists is complete, whoever built it.
        building = root / f".{kind}-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        subprocess.run(
            [str(lfm2_audio_python), "-W", "error", str(MAKE_TINY), kind, str(building)],
            check=True,
            capture_output=True,
            timeout=600,
        )
        try:
            building.rename(folder)
        except OSError:  # another session was faster
            shutil.rmtree(building, ignore_errors=True)
    return root


def node_of(
    environment: Environment,
    model: Path,
    node_class: type[LFM2AudioNode] = LFM2AudioNode,
    **params: Any,
) -> ProcessNode:
    """A node of ``node_class`` in a worker process of the liquid-audio environment."""
    values = LFM2AudioParams(model=str(model), **params)
    return ProcessNode(
        "lfm2",
        values,
        node_class=node_class,
        raw_params=attrs.asdict(values),
        session_id=new_session_id(),
        settings=WorkerSettings(
            default_namespace(),
            environments=Environments(models.test_env_dir()),
            node_environments={node_class.node_type: environment},
        ),
        environment=environment,
    )


@contextlib.asynccontextmanager
async def running(node: ProcessNode) -> AsyncIterator[ProcessNode]:
    """The node, initialised (its worker started, the model loaded); cleaned up after."""
    try:
        await node.initialize()
        yield node
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await node.cleanup()


async def results(node: ProcessNode, data: RuntimeData, count: int = 0) -> list[RuntimeData]:
    """The outputs of one input; with ``count``, only the first ones, the rest abandoned."""
    found: list[RuntimeData] = []
    async with contextlib.aclosing(node.process(data)) as outputs:  # type: ignore[type-var]
        async for item in outputs:
            found.append(item)
            if len(found) == count:
                break
    return found


def speech(seconds: float, rate: int = 48_000, channels: int = 2) -> Audio:
    """Noise standing for speech (the model is random anyway), interleaved."""
    rng = np.random.default_rng(7)
    samples = rng.standard_normal(int(seconds * rate) * channels) * 0.1
    return Audio(samples.astype(np.float32), rate, channels)


def pieces(outputs: list[RuntimeData]) -> tuple[list[str], list[Audio], dict[str, Any]]:
    """A reply's text pieces (markers left out), audio chunks and final status."""
    *stream, final = outputs
    assert isinstance(final, Json), final
    assert final.value["final"] is True
    texts = [o.text for o in stream if isinstance(o, Text) and not o.text.startswith("<|")]
    audio = [o for o in stream if isinstance(o, Audio)]
    return texts, audio, dict(final.value)


async def test_asr_mode_answers_speech_at_any_rate_with_text(
    lfm2_audio_environment: Environment, tiny_lfm2_audio: Path
) -> None:
    node = node_of(lfm2_audio_environment, tiny_lfm2_audio / "mimi", mode="asr", max_new_tokens=8)
    with trio.fail_after(TIMEOUT):
        async with running(node):
            outputs = await results(node, speech(1.5))
    texts, audio, final = pieces(outputs)
    assert texts
    assert audio == []
    assert outputs[-2] == Text("<|text_end|>")
    assert final["text"] == "".join(texts)
    assert (final["turns"], final["audio_seconds"]) == (1, 0.0)
    assert "torch" not in sys.modules  # the test process never imported it
    assert "liquid_audio" not in sys.modules


async def test_tts_mode_streams_text_as_24khz_speech_in_chunks(
    lfm2_audio_environment: Environment, tiny_lfm2_audio: Path
) -> None:
    node = node_of(lfm2_audio_environment, tiny_lfm2_audio / "mimi", mode="tts", max_new_tokens=24)
    with trio.fail_after(TIMEOUT):
        async with running(node):
            outputs = await results(node, Text("Hello there, how are you today?"))
    texts, audio, final = pieces(outputs)
    assert texts == []  # <|audio_start|>, then only audio
    # One token opens the audio, then 23 frames: four chunks of five and one of three.
    assert [chunk.num_frames for chunk in audio] == [CHUNK] * 4 + [3 * 1_920]
    assert all((chunk.sample_rate, chunk.channels) == (24_000, 1) for chunk in audio)
    assert all(np.abs(chunk.samples).max() <= 1.0 for chunk in audio)
    assert outputs[-2] == Text("<|audio_end|>")
    assert final["audio_seconds"] == pytest.approx(23 * 0.08)
    assert "torch" not in sys.modules


async def test_interleaved_mode_answers_speech_with_text_and_speech(
    lfm2_audio_environment: Environment, tiny_lfm2_audio: Path
) -> None:
    node = node_of(lfm2_audio_environment, tiny_lfm2_audio / "mimi", max_new_tokens=36)
    with trio.fail_after(TIMEOUT):
        async with running(node):
            outputs = await results(node, speech(1.0, rate=16_000, channels=1))
    texts, audio, final = pieces(outputs)
    kinds = [
        type(o).__name__ for o in outputs if not (isinstance(o, Text) and o.text.startswith("<|"))
    ]
    # Six text tokens, twelve audio frames, and again: text first, then speech, in turn.
    assert kinds[0] == "Text"
    assert "Audio" in kinds
    assert kinds.index("Audio") < len(kinds) - 1 - kinds[::-1].index("Text")
    assert sum(chunk.num_frames for chunk in audio) == 24 * 1_920
    assert final["text"] == "".join(texts)
    assert final["audio_seconds"] == pytest.approx(24 * 0.08)


async def test_a_reset_forgets_the_conversation(
    lfm2_audio_environment: Environment, tiny_lfm2_audio: Path
) -> None:
    node = node_of(lfm2_audio_environment, tiny_lfm2_audio / "mimi", max_new_tokens=10)
    turn = speech(1.0)
    with trio.fail_after(TIMEOUT):
        async with running(node):
            first = pieces(await results(node, turn))[2]
            second = pieces(await results(node, turn))[2]
            [answer] = await results(node, Json({"reset": True}))
            third = pieces(await results(node, turn))[2]
            [changed] = await results(node, Json({"system_prompt": "Perform ASR."}))
    assert (first["turns"], second["turns"], third["turns"]) == (1, 2, 1)
    assert second["context_tokens"] > first["context_tokens"]  # the first exchange, and more
    assert answer == Json({"reset": True, "turns": 0, "context_tokens": 0})
    assert third["context_tokens"] == first["context_tokens"]  # as if it were the first
    assert changed == Json({"system_prompt": "Perform ASR.", "turns": 0, "context_tokens": 0})


async def test_an_abandoned_reply_stops_and_the_next_input_starts_at_once(
    lfm2_audio_environment: Environment, tiny_lfm2_audio: Path
) -> None:
    node = node_of(lfm2_audio_environment, tiny_lfm2_audio / "mimi", max_new_tokens=8_000)
    with trio.fail_after(TIMEOUT):
        async with running(node):
            pid = node.pid
            cut_short = await results(node, speech(1.0), count=8)  # then a barge-in cuts it
            cut = trio.current_time()
            # The next input's first output waits only for the first reply to see the
            # stop (one model step, and at most one decode of five frames by the random
            # Mimi: 0.8 s measured), not for the rest of its 8,000 tokens.
            assert len(await results(node, speech(1.0), count=1)) == 1
            assert trio.current_time() - cut < 2.0 + 1.0
            [status] = await results(node, Json({"barge_in": True}))
            assert (node.pid, node.restarts) == (pid, 0)
            assert node.counts["abandoned_input"] == 2
    assert any(isinstance(o, Audio) for o in cut_short)
    assert isinstance(status, Json)
    # Both cut replies joined the conversation as far as they went.
    assert status.value["turns"] == 2
    assert status.value["context_tokens"] > 2 * 13  # more than the two inputs' audio


async def test_lfm2_node_speaks_with_the_lfm25_detokenizer_on_the_cpu(
    lfm2_audio_environment: Environment, tiny_lfm2_audio: Path
) -> None:
    # liquid-audio would build this detokenizer with .cuda(); the node builds it itself.
    node = node_of(
        lfm2_audio_environment,
        tiny_lfm2_audio / "detokenizer",
        LFM2Node,
        mode="tts",
        max_new_tokens=12,
        decode_frames=2,
    )
    with trio.fail_after(TIMEOUT):
        async with running(node):
            outputs = await results(node, Text("Hello there."))
    assert node.node_type == "LFM2Node"
    _, audio, final = pieces(outputs)
    # Each chunk but the last holds back 480 samples the next frames still add to.
    sizes = [chunk.num_frames for chunk in audio]
    assert sum(sizes) == 11 * 1_920
    assert len(sizes) >= 5
    assert all(chunk.sample_rate == 24_000 for chunk in audio)
    assert final["audio_seconds"] == pytest.approx(11 * 0.08)


async def test_commands_need_no_model_and_answer_with_the_conversation_size() -> None:
    node = LFM2AudioNode("lfm2", LFM2AudioParams())
    assert [o async for o in node.process(Control("reset"))] == [
        Json({"reset": True, "turns": 0, "context_tokens": 0})
    ]
    prompt = Control("system_prompt", fields={"text": "Perform ASR."})
    assert [o async for o in node.process(prompt)] == [
        Json({"system_prompt": "Perform ASR.", "turns": 0, "context_tokens": 0})
    ]
    assert node.counts["conversation_reset"] == 2
    # Other nodes' control messages, and other models' end markers, are no turns.
    assert [o async for o in node.process(Control("cancel_speculation", "s1"))] == []
    assert [o async for o in node.process(Text("<|text_end|>"))] == []
    assert [o async for o in node.process(Text("  "))] == []


async def test_inputs_it_cannot_take_are_refused_with_what_it_takes() -> None:
    node = LFM2AudioNode("lfm2", LFM2AudioParams())
    with pytest.raises(
        TypeError, match=r"takes audio, text, or JSON with 'text'.*got JSON with the keys question"
    ):
        [o async for o in node.process(Json({"question": "hi"}))]
    with pytest.raises(ValueError, match="takes only the keys barge_in, reset, system_prompt"):
        [o async for o in node.process(Json({"reset": True, "text": "hi"}))]
    with pytest.raises(ValueError, match="system_prompt must be a text"):
        [o async for o in node.process(Json({"system_prompt": 3}))]


async def test_a_missing_or_wrong_model_folder_is_named_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"needs a model: set params\.model"):
        await LFM2AudioNode("lfm2", LFM2AudioParams()).initialize()
    with pytest.raises(ModelNotFoundError, match=r"hf download LiquidAI/LFM2-Audio-1\.5B"):
        await LFM2AudioNode("lfm2", LFM2AudioParams(model="LiquidAI/LFM2-Audio-1.5B")).initialize()
    with pytest.raises(ModelNotFoundError, match=r"has no readable config\.json"):
        await LFM2AudioNode("lfm2", LFM2AudioParams(model=str(tmp_path))).initialize()
    (tmp_path / "config.json").write_text('{"model_type": "whisper"}')
    with pytest.raises(ModelNotFoundError, match="is not an LFM2-Audio model"):
        await LFM2AudioNode("lfm2", LFM2AudioParams(model=str(tmp_path))).initialize()
    (tmp_path / "config.json").write_text('{"lfm": {}, "encoder": {}, "depthformer": {}}')
    with pytest.raises(ModelNotFoundError, match=r"neither Mimi's weights.*download the whole"):
        await LFM2AudioNode("lfm2", LFM2AudioParams(model=str(tmp_path))).initialize()
    assert "torch" not in sys.modules


def test_params_pick_the_task_by_the_system_prompt() -> None:
    assert LFM2AudioParams().prompt() == "Respond with interleaved text and audio."
    assert LFM2AudioParams(mode="ASR").prompt() == "Perform ASR."
    tts = LFM2AudioParams(mode="tts", voice="US female")
    assert tts.prompt() == "Perform TTS. Use the US female voice."
    assert LFM2AudioParams(mode="tts", system_prompt="Say it.").prompt() == "Say it."
    with pytest.raises(ValueError, match="mode must be one of"):
        LFM2AudioParams(mode="chat")
    with pytest.raises(ValueError, match="device must be one of auto, cpu, cuda, mps"):
        LFM2AudioParams(device="tpu")
    assert LFM2AudioNode.environment == LIQUID_AUDIO_ENVIRONMENT
    assert LFM2Node.node_type == "LFM2Node"
