"""Unit tests for the audio nodes: chunker, resampler, segmenter and accumulator."""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import pytest

from remotemedia.media import Audio, Control, Json, RuntimeData, Text
from remotemedia.nodes.audio.accumulator import (
    CANCEL,
    AccumulatorParams,
    AudioBufferAccumulatorNode,
)
from remotemedia.nodes.audio.chunker import AudioChunkerNode, ChunkerParams
from remotemedia.nodes.audio.resample import FastResampleNode, ResampleParams
from remotemedia.nodes.audio.segmenter import Segmenter, SegmenterConfig, SpeechEvent
from remotemedia.params import structure_params

RATE = 16_000


def audios(outputs: list[RuntimeData]) -> list[Audio]:
    assert all(isinstance(o, Audio) for o in outputs)
    return outputs  # type: ignore[return-value]


def joined(outputs: list[RuntimeData]) -> np.ndarray:
    return np.concatenate([a.samples for a in audios(outputs)] or [np.zeros(0, np.float32)])


# --- AudioChunkerNode --------------------------------------------------------------


@pytest.mark.parametrize(("seed", "size", "channels"), [(0, 512, 1), (1, 160, 2), (2, 1, 1)])
def test_chunker_emits_exact_chunks_and_preserves_samples(
    seed: int, size: int, channels: int
) -> None:
    rng = np.random.default_rng(seed)
    node = AudioChunkerNode("c", ChunkerParams(chunk_size=size))
    signal = rng.uniform(-1, 1, 20_003 * channels).astype(np.float32)
    outputs: list[RuntimeData] = []
    position = 0
    while position < signal.size:
        frames = int(rng.integers(0, 3 * size + 2))
        piece = signal[position : position + frames * channels]
        outputs += node.process(Audio(piece, RATE, channels))
        position += piece.size
    assert all(a.num_frames == size and a.channels == channels for a in audios(outputs))
    tail = audios(node.flush())
    remainder = (signal.size // channels) % size
    assert [a.num_frames for a in tail] == ([remainder] if remainder else [])
    np.testing.assert_array_equal(joined(outputs + tail), signal)


def test_chunker_passes_exact_sized_chunk_through_unchanged() -> None:
    node = AudioChunkerNode("c", ChunkerParams(chunk_size=4))
    chunk = Audio(np.arange(4, dtype=np.float32), RATE)
    assert node.process(chunk)[0] is chunk


def test_chunker_flush_returns_remainder_once() -> None:
    node = AudioChunkerNode("c", ChunkerParams(chunk_size=4))
    assert node.process(Audio(np.arange(6, dtype=np.float32), RATE)) != []
    (rest,) = audios(node.flush())
    np.testing.assert_array_equal(rest.samples, [4, 5])
    assert node.flush() == []


def test_chunker_flush_without_input_is_empty() -> None:
    assert AudioChunkerNode("c", ChunkerParams()).flush() == []


def test_chunker_zero_frame_input_leaves_nothing_to_flush() -> None:
    node = AudioChunkerNode("c", ChunkerParams(chunk_size=4))
    assert node.process(Audio(np.zeros(0, np.float32), RATE)) == []
    assert node.flush() == []


def test_chunker_format_change_flushes_partial_chunk_first() -> None:
    node = AudioChunkerNode("c", ChunkerParams(chunk_size=4))
    node.process(Audio(np.ones(6, np.float32), RATE))
    outputs = audios(node.process(Audio(np.full(8, 2, np.float32), 8_000, 2)))
    assert [(a.sample_rate, a.channels, a.num_frames) for a in outputs] == [
        (RATE, 1, 2),
        (8_000, 2, 4),
    ]
    np.testing.assert_array_equal(outputs[0].samples, [1, 1])


def test_chunker_rejects_non_audio() -> None:
    with pytest.raises(TypeError, match="accepts only audio, got text"):
        AudioChunkerNode("c", ChunkerParams()).process(Text("hi"))


# --- FastResampleNode --------------------------------------------------------------


def sine(rate: int, seconds: float, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([wave, -wave], axis=1).reshape(-1) if channels == 2 else wave


def resample_in_pieces(node: FastResampleNode, signal: np.ndarray, rate: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    outputs: list[RuntimeData] = []
    position = 0
    while position < signal.size:
        frames = int(rng.integers(1, 3_000))
        outputs += node.process(Audio(signal[position : position + frames], rate))
        position += frames
    return outputs


def test_resample_22050_to_16000_keeps_length_and_waveform() -> None:
    node = FastResampleNode("r", ResampleParams())
    outputs = resample_in_pieces(node, sine(22_050, 2.0), 22_050, seed=4) + node.flush()
    assert all(a.sample_rate == RATE for a in audios(outputs))
    result = joined(outputs)
    assert abs(result.size - 32_000) <= 2
    np.testing.assert_allclose(
        result[200:-200], sine(RATE, 2.0)[200 : result.size - 200], atol=1e-3
    )


def test_resample_auto_source_rate_via_structure_params() -> None:
    params, problems = structure_params(ResampleParams, {"sourceRate": "AUTO"}, "$")
    assert problems == []
    assert params == ResampleParams(source_rate=None)
    node = FastResampleNode("r", params)
    out = joined(node.process(Audio(np.zeros(48_000, np.float32), 48_000)) + node.flush())
    assert abs(out.size - RATE) <= 2


def test_resample_explicit_source_rate_mismatch_names_both_rates() -> None:
    node = FastResampleNode("r", ResampleParams(source_rate=44_100))
    with pytest.raises(ValueError, match="source_rate is 44100 Hz but the audio is 48000 Hz"):
        node.process(Audio(np.zeros(480, np.float32), 48_000))


def test_resample_channels_mismatch_raises() -> None:
    node = FastResampleNode("r", ResampleParams(channels=1))
    with pytest.raises(ValueError, match="channels is 1 but the audio has 2"):
        node.process(Audio(np.zeros(480, np.float32), 48_000, 2))


def test_resample_rate_change_mid_stream_drains_and_restarts() -> None:
    node = FastResampleNode("r", ResampleParams())
    first = resample_in_pieces(node, sine(22_050, 1.0), 22_050, seed=5)
    switch = node.process(Audio(sine(44_100, 0.5).astype(np.float32), 44_100))
    rest = resample_in_pieces(node, sine(44_100, 0.5), 44_100, seed=6) + node.flush()
    total = joined(first + switch + rest).size
    assert abs(total - 32_000) <= 4
    # The old stream's tail comes out before anything resampled from the new rate.
    assert abs(joined(first).size + audios(switch)[0].num_frames - RATE) <= 2


def test_resample_same_rate_passes_same_object() -> None:
    node = FastResampleNode("r", ResampleParams(target_rate=RATE))
    audio = Audio(np.ones(100, np.float32), RATE)
    assert node.process(audio) == [audio]
    assert node.process(audio)[0] is audio
    assert node.flush() == []


@pytest.mark.parametrize(("given", "canonical"), [("high", "High"), ("LOW", "Low")])
def test_resample_quality_accepted_in_any_case(given: str, canonical: str) -> None:
    params = ResampleParams(quality=given)
    assert params.quality == canonical
    node = FastResampleNode("r", params)
    out = node.process(Audio(np.zeros(8_000, np.float32), 8_000)) + node.flush()
    assert abs(joined(out).size - RATE) <= 2
    with pytest.raises(ValueError, match="quality must be one of"):
        ResampleParams(quality="ultra")


def test_resample_stereo_keeps_channels_apart() -> None:
    node = FastResampleNode("r", ResampleParams())
    signal = sine(48_000, 0.5, channels=2).astype(np.float32)
    outputs = audios(node.process(Audio(signal, 48_000, 2)) + node.flush())
    assert {(a.channels, a.sample_rate) for a in outputs} == {(2, RATE)}
    frames = np.concatenate([a.frames() for a in outputs])
    assert abs(len(frames) - 8_000) <= 2
    np.testing.assert_allclose(frames[:, 1], -frames[:, 0], atol=1e-6)
    np.testing.assert_allclose(
        frames[100:-100, 0], sine(RATE, 0.5)[100 : len(frames) - 100], atol=1e-3
    )


# --- Segmenter ---------------------------------------------------------------------

CONFIG = SegmenterConfig(
    threshold=0.5,
    neg_threshold=0.35,
    min_speech_samples=1024,
    min_silence_samples=1536,
    pad_samples=256,
)


def segment(probs: list[float], config: SegmenterConfig = CONFIG) -> tuple[list, Segmenter]:
    segmenter = Segmenter(config)
    events = [(i, e) for i, p in enumerate(probs) if (e := segmenter.push(p, 512))]
    return events, segmenter


def test_segmenter_starts_only_after_min_speech_with_pad() -> None:
    events, segmenter = segment([0.1, 0.1, 0.9, 0.9, 0.9])
    assert events == [(3, SpeechEvent("start", 1024 - 256))]
    assert segmenter.in_speech
    assert segmenter.position == 5 * 512


def test_segmenter_start_pad_clamped_at_zero() -> None:
    assert segment([0.9, 0.9])[0] == [(1, SpeechEvent("start", 0))]


def test_segmenter_ends_after_min_silence_with_pad() -> None:
    events, segmenter = segment([0.9, 0.9, 0.9, 0.1, 0.2, 0.3, 0.1])
    assert events == [(1, SpeechEvent("start", 0)), (5, SpeechEvent("end", 1536 + 256))]
    assert not segmenter.in_speech


def test_segmenter_end_pad_clamped_to_current_position() -> None:
    config = attrs.evolve(CONFIG, min_speech_samples=0, min_silence_samples=512, pad_samples=4000)
    events = segment([0.9, 0.0], config)[0]
    assert events == [(0, SpeechEvent("start", 0)), (1, SpeechEvent("end", 1024))]


def test_segmenter_discards_short_burst() -> None:
    events, segmenter = segment([0.1, 0.9, 0.1, 0.1, 0.1, 0.9, 0.2])
    assert events == []
    assert segmenter.finish() == []


def test_segmenter_probability_between_thresholds_keeps_speech() -> None:
    events, segmenter = segment([0.9, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4])
    assert events == [(1, SpeechEvent("start", 0))]
    assert segmenter.in_speech


def test_segmenter_in_between_probability_neither_ends_nor_resets_silence() -> None:
    assert segment([0.9, 0.9, 0.1, 0.1, 0.4, 0.1])[0][1:] == [(5, SpeechEvent("end", 1280))]
    # A frame at or above threshold resets the silence run.
    assert segment([0.9, 0.9, 0.1, 0.1, 0.5, 0.1, 0.1])[0] == [(1, SpeechEvent("start", 0))]


def test_segmenter_finish_closes_open_speech_at_position() -> None:
    _, segmenter = segment([0.9, 0.9, 0.9])
    assert segmenter.finish() == [SpeechEvent("end", 1536)]
    assert not segmenter.in_speech
    assert segmenter.finish() == []


def test_segmenter_finish_ends_speech_at_open_silence_run_plus_pad() -> None:
    _, segmenter = segment([0.9, 0.9, 0.9, 0.1, 0.1])
    assert segmenter.finish() == [SpeechEvent("end", 1536 + 256)]


def test_segmenter_finish_with_long_enough_candidate_yields_start_and_end() -> None:
    segmenter = Segmenter(attrs.evolve(CONFIG, min_speech_samples=800, pad_samples=0))
    assert segmenter.push(0.9, 512) is None
    assert segmenter.push(0.9, 300) == SpeechEvent("start", 0)  # a short last frame
    assert segmenter.finish() == [SpeechEvent("end", 812)]


PAUSING = attrs.evolve(CONFIG, pause_samples=1024)


def test_segmenter_pauses_where_the_end_then_comes() -> None:
    events = segment([0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1], PAUSING)[0]
    assert events == [
        (1, SpeechEvent("start", 0)),
        (4, SpeechEvent("pause", 1536 + 256)),
        (5, SpeechEvent("end", 1536 + 256)),
    ]


def test_segmenter_resumes_when_speech_returns_before_the_end() -> None:
    events, segmenter = segment([0.9, 0.9, 0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1], PAUSING)
    assert events == [
        (1, SpeechEvent("start", 0)),
        (4, SpeechEvent("pause", 1536 + 256)),
        (5, SpeechEvent("resume", 5 * 512)),
        (7, SpeechEvent("pause", 3072 + 256)),
        (8, SpeechEvent("end", 3072 + 256)),
    ]
    assert not segmenter.in_speech


def test_segmenter_no_pause_without_speech_or_setting() -> None:
    assert segment([0.9, 0.1, 0.1, 0.1, 0.1], PAUSING)[0] == []  # a candidate, never speech
    plain = segment([0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1])[0]
    assert [e.kind for _, e in plain] == ["start", "end"]


def test_segmenter_finish_after_a_pause_ends_at_the_paused_position() -> None:
    events, segmenter = segment([0.9, 0.9, 0.9, 0.1, 0.1], PAUSING)
    assert events[-1] == (4, SpeechEvent("pause", 1536 + 256))
    assert segmenter.finish() == [SpeechEvent("end", 1536 + 256)]


# --- AudioBufferAccumulatorNode ----------------------------------------------------


def vad_event(kind: str, ms: float) -> Json:
    """An event as SileroVADNode emits it (reported 300 ms late)."""
    start, end = kind == "start", kind == "end"
    value = {"has_speech": start, "speech_probability": 0.9, "timestamp_ms": ms + 300}
    return Json(value | {"is_speech_start": start, "is_speech_end": end, f"speech_{kind}_ms": ms})


def accumulator(**params: Any) -> AudioBufferAccumulatorNode:
    return AudioBufferAccumulatorNode("acc", AccumulatorParams(**params))


def ramp(frames: int) -> np.ndarray:
    return (0.05 + 0.9 * np.arange(frames) / frames).astype(np.float32)


def stream(
    node: AudioBufferAccumulatorNode,
    signal: np.ndarray,
    until_ms: float,
    *,
    from_ms: float = 0,
    chunk: int = 320,
) -> list:
    outputs: list[RuntimeData] = []
    for start in range(int(from_ms * 16), int(until_ms * 16), chunk):
        outputs += node.process(Audio(signal[start : start + chunk], RATE))
    return outputs


def bounds(utterance: Audio) -> tuple[float, float]:
    return utterance.metadata["start_ms"], utterance.metadata["end_ms"]


def test_accumulator_utterance_spans_start_minus_preroll_to_end() -> None:
    node, signal = accumulator(pre_roll_ms=200), ramp(3 * RATE)
    assert stream(node, signal, 1280) == []
    assert node.process(vad_event("start", 1000)) == []
    assert stream(node, signal, 2100, from_ms=1280) == []
    (utterance,) = audios(node.process(vad_event("end", 2000)))
    assert bounds(utterance) == (800.0, 2000.0)
    assert utterance.num_frames == 1200 * 16
    np.testing.assert_array_equal(utterance.samples, signal[800 * 16 : 2000 * 16])
    assert stream(node, signal, 3000, from_ms=2100) == []
    assert node.flush() == []


def test_accumulator_end_event_before_its_audio_waits_for_audio() -> None:
    node, signal = accumulator(pre_roll_ms=0), ramp(2 * RATE)
    node.process(vad_event("start", 500))
    assert stream(node, signal, 1500) == []
    assert node.process(vad_event("end", 1800)) == []
    assert stream(node, signal, 1780, from_ms=1500) == []
    (utterance,) = audios(stream(node, signal, 1800, from_ms=1780))
    assert bounds(utterance) == (500.0, 1800.0)
    np.testing.assert_array_equal(utterance.samples, signal[500 * 16 : 1800 * 16])


def test_accumulator_late_start_recovers_pre_roll_from_history() -> None:
    node, signal = accumulator(pre_roll_ms=300), ramp(5 * RATE)
    stream(node, signal, 3900)  # the VAD reported the start 1.9 s late
    node.process(vad_event("start", 2000))
    (utterance,) = audios(node.process(vad_event("end", 3500)))
    assert bounds(utterance) == (1700.0, 3500.0)
    np.testing.assert_array_equal(utterance.samples, signal[1700 * 16 : 3500 * 16])


def test_accumulator_splits_at_max_utterance_duration() -> None:
    node, signal = accumulator(pre_roll_ms=0, max_utterance_duration_ms=1000), ramp(3 * RATE)
    node.process(vad_event("start", 0))
    outputs = stream(node, signal, 2500, chunk=1600)
    outputs += node.process(vad_event("end", 2500))
    assert [bounds(a) for a in audios(outputs)] == [(0, 1000), (1000, 2000), (2000, 2500)]
    np.testing.assert_array_equal(joined(outputs), signal[: 2500 * 16])


def test_accumulator_never_exceeds_max_duration_with_long_chunks() -> None:
    node, signal = accumulator(pre_roll_ms=0, max_utterance_duration_ms=1000), ramp(3 * RATE)
    node.process(vad_event("start", 0))
    outputs = node.process(Audio(signal, RATE)) + node.process(vad_event("end", 3000))
    assert [bounds(a) for a in audios(outputs)] == [(0, 1000), (1000, 2000), (2000, 3000)]


def test_accumulator_keeps_start_that_follows_a_pending_end() -> None:
    node, signal = accumulator(pre_roll_ms=200), ramp(3 * RATE)
    node.process(vad_event("start", 400))
    node.process(Audio(signal[:RATE], RATE))
    outputs = node.process(vad_event("end", 1300)) + node.process(vad_event("start", 1600))
    outputs += node.process(Audio(signal[RATE : 2 * RATE], RATE))
    outputs += node.process(vad_event("end", 2500))
    outputs += node.process(Audio(signal[2 * RATE :], RATE))
    assert [bounds(a) for a in audios(outputs)] == [(200, 1300), (1400, 2500)]


def test_accumulator_drops_utterance_shorter_than_minimum() -> None:
    signal = ramp(2 * RATE)
    for pre_roll, expected in [(0, []), (100, [(900.0, 1200.0)])]:
        node = accumulator(pre_roll_ms=pre_roll, min_utterance_duration_ms=250)
        stream(node, signal, 1500)
        node.process(vad_event("start", 1000))
        assert [bounds(a) for a in audios(node.process(vad_event("end", 1200)))] == expected


@pytest.mark.parametrize(("peak", "kept"), [(0.0199, False), (0.0201, True)])
def test_accumulator_drops_quiet_utterance(peak: float, kept: bool) -> None:
    node, signal = accumulator(pre_roll_ms=0), np.zeros(RATE, np.float32)
    signal[8000] = -peak
    stream(node, signal, 1000)
    node.process(vad_event("start", 100))
    assert len(node.process(vad_event("end", 900))) == int(kept)


def test_accumulator_flush_emits_utterance_in_progress() -> None:
    node, signal = accumulator(pre_roll_ms=100), ramp(2 * RATE)
    node.process(vad_event("start", 600))
    stream(node, signal, 1500)
    (utterance,) = audios(node.flush())
    assert bounds(utterance) == (500.0, 1500.0)
    np.testing.assert_array_equal(utterance.samples, signal[500 * 16 : 1500 * 16])
    assert node.flush() == []


def test_accumulator_flush_stops_at_pending_end() -> None:
    node, signal = accumulator(pre_roll_ms=0), ramp(2 * RATE)
    node.process(vad_event("start", 200))
    stream(node, signal, 1000)
    node.process(vad_event("end", 1400))
    (utterance,) = audios(node.flush())
    assert bounds(utterance) == (200.0, 1000.0)


def test_accumulator_memory_bounded_without_speech() -> None:
    node = accumulator()
    quiet = np.zeros(512, np.float32)
    for _ in range(5_000):
        assert node.process(Audio(quiet, RATE)) == []
    history_chunks = (200 + 2_000) * 16 // 512 + 2
    assert len(node._chunks) <= history_chunks


def test_accumulator_stereo_keeps_whole_frames() -> None:
    node = accumulator(pre_roll_ms=0, min_utterance_duration_ms=0)
    frames = np.stack([ramp(RATE), -ramp(RATE)], axis=1)
    node.process(vad_event("start", 250))
    node.process(Audio(frames[:8000], RATE, 2))
    (utterance,) = audios(node.process(vad_event("end", 375)))
    assert utterance.channels == 2
    np.testing.assert_array_equal(utterance.frames(), frames[4000:6000])


def test_accumulator_format_change_cuts_and_continues_speech_in_stream_time() -> None:
    node = accumulator(pre_roll_ms=0, min_utterance_duration_ms=0)
    node.process(vad_event("start", 500))
    node.process(Audio(ramp(RATE), RATE))
    (first,) = audios(node.process(Audio(np.full(8_000, 0.5, np.float32), 8_000)))
    assert bounds(first) == (500.0, 1000.0)
    # The speech goes on in the new format without a second start event.
    (second,) = audios(node.process(vad_event("end", 1500)))
    assert (second.sample_rate, bounds(second), second.num_frames) == (
        8_000,
        (1000.0, 1500.0),
        4000,
    )


def test_accumulator_ignores_other_inputs() -> None:
    node = accumulator()
    assert node.process(Json([1, 2])) == []
    assert node.process(Text("hello")) == []
    assert node.flush() == []


def test_accumulator_params_reject_min_above_max() -> None:
    with pytest.raises(ValueError, match=r"min_utterance_duration_ms \(2000\) must not exceed"):
        AccumulatorParams(min_utterance_duration_ms=2000, max_utterance_duration_ms=1000)


# --- speculation ---------------------------------------------------------------------


def transition(kind: str, ms: float) -> Json:
    """A VAD event listing one transition (pause and resume come only this way)."""
    return Json({"timestamp_ms": ms + 100, "events": [{"kind": kind, "ms": ms}]})


def controls(outputs: list[RuntimeData]) -> list[tuple[str, str]]:
    return [(o.kind, o.segment_id) for o in outputs if isinstance(o, Control)]


def utterances_in(outputs: list[RuntimeData]) -> list[Audio]:
    return [o for o in outputs if isinstance(o, Audio)]


def test_accumulator_speculates_at_a_pause_and_the_end_commits_it() -> None:
    node, signal = accumulator(pre_roll_ms=0), ramp(3 * RATE)
    node.process(transition("start", 500))
    assert stream(node, signal, 1200) == []
    (guess,) = node.process(transition("pause", 1100))
    assert bounds(guess) == (500.0, 1100.0)
    assert guess.metadata["speculation"] == "acc-1"
    assert stream(node, signal, 1300, from_ms=1200) == []
    (final,) = audios(node.process(transition("end", 1100)))
    assert final.metadata == {
        "start_ms": 500.0,
        "end_ms": 1100.0,
        "utterance": "acc-u1",
        "commits": "acc-1",
    }
    np.testing.assert_array_equal(final.samples, guess.samples)
    assert stream(node, signal, 2000, from_ms=1300) == []  # nothing sent twice
    assert node.flush() == []
    assert node.counts == {"speculation_started": 1, "speculation_committed": 1}


def test_accumulator_cancels_a_speculation_when_speech_resumes() -> None:
    node, signal = accumulator(pre_roll_ms=0), ramp(3 * RATE)
    node.process(transition("start", 500))
    stream(node, signal, 1200)
    assert len(node.process(transition("pause", 1100))) == 1
    assert node.process(transition("resume", 1230)) == [Control(CANCEL, "acc-1")]
    stream(node, signal, 2100, from_ms=1200)
    (utterance,) = audios(node.process(transition("end", 2000)))
    assert bounds(utterance) == (500.0, 2000.0)
    assert "speculation" not in utterance.metadata
    assert node.counts == {"speculation_started": 1, "speculation_cancelled": 1}


def test_accumulator_waits_for_the_paused_audio_before_speculating() -> None:
    node, signal = accumulator(pre_roll_ms=0), ramp(3 * RATE)
    node.process(transition("start", 500))
    stream(node, signal, 1000)
    assert node.process(transition("pause", 1100)) == []  # its audio has not come yet
    (guess,) = audios(stream(node, signal, 1200, from_ms=1000))
    assert bounds(guess) == (500.0, 1100.0)


def test_accumulator_end_elsewhere_than_the_pause_cancels_and_sends_the_utterance() -> None:
    node, signal = accumulator(pre_roll_ms=0), ramp(3 * RATE)
    node.process(transition("start", 500))
    stream(node, signal, 1200)
    node.process(transition("pause", 1100))
    outputs = node.process(transition("end", 1150))
    assert controls(outputs) == [(CANCEL, "acc-1")]
    (utterance,) = utterances_in(outputs)
    assert bounds(utterance) == (500.0, 1150.0)


def test_accumulator_without_speculation_ignores_pauses() -> None:
    node, signal = accumulator(pre_roll_ms=0, speculative=False), ramp(3 * RATE)
    node.process(transition("start", 500))
    stream(node, signal, 1200)
    assert node.process(transition("pause", 1100)) == []
    (utterance,) = audios(node.process(transition("end", 1100)))
    assert "speculation" not in utterance.metadata


def test_accumulator_flush_cancels_a_speculation_the_stream_outlived() -> None:
    node, signal = accumulator(pre_roll_ms=0), ramp(3 * RATE)
    node.process(transition("start", 500))
    stream(node, signal, 1200)
    node.process(transition("pause", 1100))
    outputs = node.flush()  # input ended before the VAD said anything more
    assert controls(outputs) == [(CANCEL, "acc-1")]
    (utterance,) = utterances_in(outputs)
    assert bounds(utterance) == (500.0, 1200.0)


# --- interims ----------------------------------------------------------------------


def test_accumulator_sends_the_utterance_so_far_at_every_interim_interval() -> None:
    node, signal = accumulator(pre_roll_ms=0, interim_interval_ms=500), ramp(3 * RATE)
    node.process(transition("start", 500))
    interims = audios(stream(node, signal, 2000))
    assert [bounds(a) for a in interims] == [(500, 1000), (500, 1500), (500, 2000)]
    assert {a.metadata["interim"] for a in interims} == {"acc-u1"}
    np.testing.assert_array_equal(interims[-1].samples, signal[500 * 16 : 2000 * 16])
    stream(node, signal, 2100, from_ms=2000)
    (final,) = audios(node.process(transition("end", 2050)))
    assert final.metadata == {"start_ms": 500.0, "end_ms": 2050.0, "utterance": "acc-u1"}


def test_accumulator_sends_no_interim_while_a_speculation_is_pending() -> None:
    node, signal = accumulator(pre_roll_ms=0, interim_interval_ms=500), ramp(4 * RATE)
    node.process(transition("start", 500))
    stream(node, signal, 1200)  # one interim, at 1000
    (guess,) = node.process(transition("pause", 1100))
    assert "interim" not in guess.metadata
    assert stream(node, signal, 1700, from_ms=1200) == []  # 1500 passed: paused, none
    outputs = node.process(transition("resume", 1700))
    assert controls(outputs) == [(CANCEL, "acc-1")]
    (interim,) = utterances_in(outputs)  # overdue: sent at once
    assert bounds(interim) == (500, 1700)
    assert interim.metadata["interim"] == "acc-u1"
    assert stream(node, signal, 2180, from_ms=1700) == []
    assert bounds(*audios(stream(node, signal, 2200, from_ms=2180))) == (500, 2200)


def test_accumulator_names_each_utterance_and_the_rest_of_a_split_one() -> None:
    node, signal = accumulator(pre_roll_ms=0, max_utterance_duration_ms=1000), ramp(3 * RATE)
    node.process(transition("start", 0))
    outputs = stream(node, signal, 1500, chunk=1600) + node.process(transition("end", 1500))
    node.process(transition("start", 2000))
    outputs += stream(node, signal, 3000, from_ms=1500) + node.process(transition("end", 2900))
    assert [a.metadata["utterance"] for a in audios(outputs)] == ["acc-u1", "acc-u2", "acc-u3"]


def test_accumulator_params_reject_an_interim_interval_too_short_to_run() -> None:
    with pytest.raises(ValueError, match=r"interim_interval_ms \(100\) must be 0 \(off\)"):
        AccumulatorParams(interim_interval_ms=100)


# --- Smart Turn verdicts -------------------------------------------------------------


def verdict(at_ms: float, probability: float) -> Json:
    """A SmartTurnNode result."""
    return Json({"turn_complete": probability >= 0.5, "probability": probability, "at_ms": at_ms})


def test_accumulator_ends_at_a_pause_smart_turn_is_sure_of() -> None:
    node, signal = accumulator(pre_roll_ms=0, end_turn_above=0.8), ramp(4 * RATE)
    node.process(transition("start", 500))
    stream(node, signal, 1200)
    (guess,) = node.process(transition("pause", 1100))
    (final,) = audios(node.process(verdict(1100, 0.93)))  # no need to wait for the end
    assert final.metadata["commits"] == guess.metadata["speculation"]
    assert node.process(transition("end", 1100)) == []  # the VAD's end: already done
    assert node.counts["turn_ended_early"] == 1


def test_accumulator_after_an_early_end_takes_resumed_speech_as_a_new_utterance() -> None:
    node, signal = accumulator(pre_roll_ms=0, end_turn_above=0.8), ramp(4 * RATE)
    node.process(transition("start", 500))
    stream(node, signal, 1200)
    node.process(transition("pause", 1100))
    node.process(verdict(1100, 0.93))
    assert node.process(transition("resume", 1200)) == []
    stream(node, signal, 2100, from_ms=1200)
    (second,) = audios(node.process(transition("end", 2000)))
    assert bounds(second) == (1200, 2000)
    assert second.metadata["utterance"] == "acc-u2"


def test_accumulator_does_not_end_early_below_the_bar_or_by_default() -> None:
    for params, probability in (({"end_turn_above": 0.8}, 0.6), ({}, 0.99)):
        node, signal = accumulator(pre_roll_ms=0, **params), ramp(4 * RATE)
        node.process(transition("start", 500))
        stream(node, signal, 1200)
        node.process(transition("pause", 1100))
        assert node.process(verdict(1100, probability)) == []


def test_accumulator_holds_an_end_smart_turn_doubts_until_speech_goes_on() -> None:
    node, signal = accumulator(pre_roll_ms=0, hold_turn_below=0.2, hold_turn_ms=800), ramp(4 * RATE)
    node.process(transition("start", 500))
    stream(node, signal, 1200)
    node.process(transition("pause", 1100))
    node.process(verdict(1100, 0.05))  # "I'd like to book a table for..."
    assert node.process(transition("end", 1100)) == []  # held
    stream(node, signal, 1500, from_ms=1300)
    assert controls(node.process(transition("start", 1500))) == [(CANCEL, "acc-1")]
    stream(node, signal, 2600, from_ms=1500)
    (whole,) = audios(node.process(transition("end", 2500)))
    assert bounds(whole) == (500, 2500)  # one utterance, the pause inside it
    assert node.counts["turn_held"] == 1


def test_accumulator_ends_a_held_utterance_when_the_hold_runs_out() -> None:
    node, signal = accumulator(pre_roll_ms=0, hold_turn_below=0.2, hold_turn_ms=800), ramp(4 * RATE)
    node.process(transition("start", 500))
    stream(node, signal, 1200)
    (guess,) = node.process(transition("pause", 1100))
    node.process(verdict(1100, 0.05))
    node.process(transition("end", 1100))
    assert stream(node, signal, 1880, from_ms=1200) == []
    (final,) = audios(stream(node, signal, 1900, from_ms=1880))  # 1100 + 800 ms
    assert bounds(final) == (500, 1100)
    assert final.metadata["commits"] == guess.metadata["speculation"]
