"""Unit tests for SileroVADNode and the Silero model helpers, with the real ONNX model."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr

from remotemedia.errors import ModelNotFoundError
from remotemedia.media import Audio, Json, RuntimeData, Text
from remotemedia.nodes.audio.silero import SileroStream, load_model, locate_model
from remotemedia.nodes.audio.vad import SileroVADNode, VADParams
from remotemedia.testing import SpeechSample, synthesize_speech

pytestmark = pytest.mark.slow

EVENT_KEYS = {
    "has_speech",
    "speech_probability",
    "is_speech_start",
    "is_speech_end",
    "timestamp_ms",
    "rms",
    "peak",
    "samples",
    "sample_rate",
}


@pytest.fixture(scope="module")
def speech() -> SpeechSample:
    return synthesize_speech(["Hello world, this is a test."])


@pytest.fixture(scope="module")
def speech16(speech: SpeechSample) -> np.ndarray:
    return soxr.resample(speech.audio.samples, speech.audio.sample_rate, 16_000).astype(np.float32)


async def vad(**params: Any) -> SileroVADNode:
    node = SileroVADNode("vad", VADParams(**params))
    await node.initialize()
    return node


async def resolve(result: Any) -> Any:
    """Await a hook's result if it is a coroutine (hooks may be plain or async)."""
    return await result if inspect.isawaitable(result) else result


async def process(node: SileroVADNode, data: RuntimeData) -> list[RuntimeData]:
    return await resolve(node.process(data))


async def flush(node: SileroVADNode) -> list[RuntimeData]:
    return await resolve(node.flush())


async def run(
    node: SileroVADNode, signal: np.ndarray, rate: int, chunk: int, channels: int = 1
) -> list[list[RuntimeData]]:
    """Feed the signal in chunks of `chunk` frames; return each chunk's outputs."""
    step = chunk * channels
    return [
        await process(node, Audio(signal[i : i + step], rate, channels))
        for i in range(0, signal.size, step)
    ]


def events(outputs: list[RuntimeData]) -> list[dict[str, Any]]:
    return [o.value for o in outputs if isinstance(o, Json)]


def changes(per_chunk: list[list[RuntimeData]]) -> list[tuple[str, float]]:
    found = []
    for outputs in per_chunk:
        for event in events(outputs):
            for kind in ("start", "end"):
                if event[f"is_speech_{kind}"]:
                    found.append((kind, event[f"speech_{kind}_ms"]))
    return found


async def test_vad_outputs_events_then_the_same_audio(speech16: np.ndarray) -> None:
    node = await vad()
    chunks = [Audio(speech16[i : i + 1000], 16_000) for i in range(0, speech16.size, 1000)]
    for index, chunk in enumerate(chunks):
        outputs = await process(node, chunk)
        # Exactly one JSON event, then the audio, as the original runtime emits.
        assert len(outputs) == 2
        assert outputs[1] is chunk
        (event,) = events(outputs[:1])
        assert set(event) >= EVENT_KEYS
        assert event["timestamp_ms"] == pytest.approx((index * 1000 + chunk.num_frames) / 16)
        assert (event["samples"], event["sample_rate"]) == (chunk.num_frames, 16_000)
        assert event["peak"] == pytest.approx(float(np.abs(chunk.samples).max()), abs=1e-5)


async def test_vad_one_long_chunk_lists_every_transition_in_order(
    speech16: np.ndarray,
) -> None:
    silence = np.zeros(16_000, np.float32)
    signal = np.concatenate([silence, speech16, silence, speech16, silence])
    small = await vad()
    reference = changes(await run(small, signal, 16_000, 512))
    reference += changes([await flush(small)])
    assert len(reference) >= 4

    node = await vad()
    (event,) = events(await process(node, Audio(signal, 16_000)))
    final = [e for flushed in events(await flush(node)) for e in flushed["events"]]
    listed = [(e["kind"], e["ms"]) for e in event["events"] + final]
    # The model sees the same frames either way, so the transitions are identical.
    assert listed == reference
    last_start = [ms for kind, ms in listed[: len(event["events"])] if kind == "start"][-1]
    assert event["speech_start_ms"] == last_start


async def test_vad_rate_change_mid_stream_loses_no_samples() -> None:
    node = await vad()
    await process(node, Audio(np.zeros(22_050, np.float32), 22_050))
    await process(node, Audio(np.zeros(16_000, np.float32), 16_000))
    await flush(node)
    # 1 s at 22,050 Hz plus 1 s at 16 kHz is exactly 32,000 samples at the model rate.
    assert node._segmenter.position == 32_000


async def test_vad_silence_gives_no_speech_events() -> None:
    node = await vad()
    rng = np.random.default_rng(7)
    hiss = (rng.standard_normal(3 * 16_000) * 1e-3).astype(np.float32)
    per_chunk = await run(node, hiss, 16_000, 480)
    assert changes(per_chunk) == []
    probabilities = [e["speech_probability"] for out in per_chunk for e in events(out)]
    assert max(probabilities) < 0.1
    assert not any(e["has_speech"] for out in per_chunk for e in events(out))
    assert await flush(node) == []


@pytest.fixture
async def reference_run(speech16: np.ndarray) -> list[list[RuntimeData]]:
    """The VAD over 512-sample chunks: exactly one model frame per chunk."""
    return await run(await vad(), speech16, 16_000, 512)


@pytest.mark.parametrize("chunk", [160, 320, 1000, 4000, 8192])
async def test_vad_any_chunk_size_gives_identical_probabilities(
    chunk: int, speech16: np.ndarray, reference_run: list[list[RuntimeData]]
) -> None:
    per_frame = [events(outputs)[-1]["speech_probability"] for outputs in reference_run]
    assert max(per_frame) > 0.9  # the reference does contain speech
    per_chunk = await run(await vad(), speech16, 16_000, chunk)
    for index, outputs in enumerate(per_chunk):
        frames_done = min((index + 1) * chunk, speech16.size) // 512
        expected = per_frame[frames_done - 1] if frames_done else 0.0
        assert events(outputs)[-1]["speech_probability"] == expected
    reference_changes = changes(reference_run)
    assert [kind for kind, _ in reference_changes[:2]] == ["start", "end"]
    assert changes(per_chunk) == reference_changes


async def test_vad_finds_speech_near_true_bounds(
    speech: SpeechSample, speech16: np.ndarray
) -> None:
    node = await vad(min_silence_duration_ms=300)
    per_chunk = await run(node, speech16, 16_000, 320)
    found = changes(per_chunk) + changes([await flush(node)])
    truth = speech.segments[0]
    assert [kind for kind, _ in found] == ["start", "end"]
    assert truth.start_ms - 150 <= found[0][1] <= truth.start_ms + 100
    assert truth.end_ms - 100 <= found[1][1] <= truth.end_ms + 300


async def test_vad_runs_at_8khz_model_rate(speech: SpeechSample, speech16: np.ndarray) -> None:
    node = await vad(sampling_rate=8_000, min_silence_duration_ms=300)
    assert node._frame == 256
    found = changes(await run(node, speech16, 16_000, 320)) + changes([await flush(node)])
    truth = speech.segments[0]
    assert [kind for kind, _ in found] == ["start", "end"]
    assert truth.start_ms - 200 <= found[0][1] <= truth.start_ms + 100
    assert truth.end_ms - 100 <= found[1][1] <= truth.end_ms + 300


async def test_vad_resamples_and_mixes_44k_stereo(speech16: np.ndarray) -> None:
    reference = changes(await run(await vad(min_silence_duration_ms=300), speech16, 16_000, 512))
    mono44 = soxr.resample(speech16, 16_000, 44_100).astype(np.float32)
    stereo = np.stack([mono44, 0.5 * mono44], axis=1).reshape(-1)
    node = await vad(min_silence_duration_ms=300)
    per_chunk = await run(node, stereo, 44_100, 441, channels=2)
    assert all(out[-1].channels == 2 for out in per_chunk)  # type: ignore[union-attr]
    found = changes(per_chunk)
    assert [k for k, _ in found] == [k for k, _ in reference]
    for (_, got), (_, want) in zip(found, reference, strict=True):
        assert abs(got - want) <= 64
    last = events(per_chunk[-1])[-1]
    assert last["timestamp_ms"] == pytest.approx(mono44.size * 1000 / 44_100)


async def test_vad_passes_non_audio_through() -> None:
    node = await vad()
    text = Text("hello")
    outputs = await process(node, text)
    assert len(outputs) == 1
    assert outputs[0] is text


async def test_vad_process_before_initialize_raises() -> None:
    node = SileroVADNode("vad", VADParams())
    with pytest.raises(RuntimeError, match="before initialize"):
        await process(node, Audio(np.zeros(512, np.float32), 16_000))
    assert await flush(node) == []


async def test_vad_flush_closes_open_speech(speech16: np.ndarray) -> None:
    node = await vad()
    cut = speech16[:16_500]  # stops in the middle of speech, on a partial frame
    assert changes(await run(node, cut, 16_000, 1_000)) == [
        ("start", pytest.approx(510.0, abs=200))
    ]
    flushed = events(await flush(node))
    assert [e["is_speech_end"] for e in flushed] == [True]
    assert flushed[0]["speech_end_ms"] == 16_500 / 16
    assert flushed[0]["has_speech"] is False
    assert await flush(node) == []


def test_locate_model_missing_explicit_path_says_how_to_install(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "silero_vad.onnx"
    with pytest.raises(ModelNotFoundError, match="does not exist") as info:
        locate_model(str(missing))
    message = str(info.value)
    assert str(missing) in message
    assert "pip install --no-deps silero-vad" in message
    assert "model_path" in message


def test_locate_model_finds_packaged_model() -> None:
    path = locate_model()
    assert path.name == "silero_vad.onnx"
    assert path.is_file()
    assert locate_model(str(path)) == path


async def test_vad_initialize_with_missing_model_raises(tmp_path: Path) -> None:
    node = SileroVADNode("vad", VADParams(model_path=str(tmp_path / "x.onnx")))
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps silero-vad"):
        await node.initialize()


def test_silero_stream_rejects_unsupported_rate() -> None:
    with pytest.raises(ValueError, match="8000 or 16000 Hz, not 44100"):
        SileroStream(load_model(locate_model()), 44_100)


def test_vad_params_neg_threshold_default_and_check() -> None:
    assert VADParams(threshold=0.6).effective_neg_threshold == pytest.approx(0.45)
    assert VADParams(threshold=0.1).effective_neg_threshold == 0.0
    assert VADParams(neg_threshold=0.2).effective_neg_threshold == 0.2
    with pytest.raises(ValueError, match=r"neg_threshold \(0.7\) must not exceed threshold"):
        VADParams(threshold=0.5, neg_threshold=0.7)
