"""Voice activity detection on real (synthesised) speech, end to end in-process and via the CLI."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from remotemedia import Audio, Json, run_pipeline
from remotemedia.cli.main import main
from remotemedia.cli.run import split_chunks
from remotemedia.testing import SpeechSample, synthesize_speech
from remotemedia.wav import read_wav, write_wav

TOLERANCE_MS = 100.0
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Voice activity detection should find this sentence.",
    "And one more, to be sure.",
)


@pytest.fixture(scope="module")
def speech() -> SpeechSample:
    return synthesize_speech(SENTENCES, gap_s=1.0, lead_s=0.6, tail_s=0.8)


def speech_spans(events: list[dict[str, Any]]) -> list[tuple[float, float]]:
    spans: list[tuple[float, float]] = []
    start: float | None = None
    for event in events:
        if event.get("is_speech_start"):
            assert start is None, "two starts without an end"
            start = event["speech_start_ms"]
        if event.get("is_speech_end"):
            assert start is not None, "an end without a start"
            spans.append((start, event["speech_end_ms"]))
            start = None
    assert start is None, "speech still open after end of input"
    return spans


def assert_matches(spans: list[tuple[float, float]], sample: SpeechSample) -> None:
    truth = [(s.start_ms, s.end_ms) for s in sample.segments]
    assert len(spans) == len(truth), f"detected {spans}, truth {truth}"
    for (start, end), (true_start, true_end) in zip(spans, truth, strict=True):
        assert abs(start - true_start) <= TOLERANCE_MS, (start, true_start)
        assert abs(end - true_end) <= TOLERANCE_MS, (end, true_end)


async def vad_events(audio: Audio, chunk_ms: float) -> list[dict[str, Any]]:
    results = await run_pipeline("vad", split_chunks(audio, chunk_ms))
    return [r.data.value for r in results if isinstance(r.data, Json)]


async def test_vad_finds_each_sentence_within_100_ms(speech: SpeechSample) -> None:
    assert_matches(speech_spans(await vad_events(speech.audio, 20.0)), speech)


@pytest.mark.parametrize("chunk_ms", [5.0, 32.0, 250.0, 1000.0])
async def test_vad_events_do_not_depend_on_chunk_size(
    speech: SpeechSample, chunk_ms: float
) -> None:
    reference = speech_spans(await vad_events(speech.audio, 20.0))
    spans = speech_spans(await vad_events(speech.audio, chunk_ms))
    assert len(spans) == len(reference)
    for (start, end), (ref_start, ref_end) in zip(spans, reference, strict=True):
        # Only the resampler's block boundaries move with chunking: within one frame.
        assert abs(start - ref_start) <= 32.0
        assert abs(end - ref_end) <= 32.0


async def test_utterances_pipeline_emits_one_audio_block_per_sentence(speech: SpeechSample) -> None:
    results = await run_pipeline("utterances", split_chunks(speech.audio, 20.0))
    utterances = [r.data for r in results if isinstance(r.data, Audio)]
    assert [r.node_id for r in results] == ["utterances"] * len(SENTENCES)
    pre_roll, pad = 200.0, 30.0  # the example's pre_roll_ms and speech_pad_ms
    spans = [
        (u.metadata["start_ms"] + pre_roll + pad, u.metadata["end_ms"] - pad) for u in utterances
    ]
    assert_matches(spans, speech)
    for utterance in utterances:
        assert utterance.sample_rate == 16_000
        expected = (utterance.metadata["end_ms"] - utterance.metadata["start_ms"]) * 16
        assert abs(utterance.num_frames - expected) <= 16


def test_cli_run_jsonl_reports_speech_events_matching_the_file(
    speech: SpeechSample, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = tmp_path / "speech.wav"
    write_wav(wav, speech.audio)
    assert main(["run", "vad", "--input", str(wav), "--jsonl"]) == 0
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert {r["kind"] for r in records} == {"json", "audio"}
    assert all(r["node_id"] == "vad" for r in records)
    audio = [r["value"] for r in records if r["kind"] == "audio"]
    assert audio[0] == {"sample_rate": 16_000, "channels": 1, "num_samples": 512}
    # 16-bit WAV quantisation is far below what moves a VAD decision.
    assert_matches(speech_spans([r["value"] for r in records if r["kind"] == "json"]), speech)
    assert f"Sent {len(split_chunks(speech.audio, 20.0))} chunks" in err  # the summary
    assert "\nvad " in err


def test_cli_run_reports_a_missing_input_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.wav"
    assert main(["run", "vad", "--input", str(missing)]) == 1
    assert f"Cannot read input file {missing}" in capsys.readouterr().err


def test_cli_run_rejects_a_non_positive_chunk_size(
    speech: SpeechSample, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = tmp_path / "speech.wav"
    write_wav(wav, speech.audio)
    assert main(["run", "vad", "--input", str(wav), "--chunk-ms", "0"]) == 1
    assert "--chunk-ms must be a positive number, got 0.0" in capsys.readouterr().err


async def test_bundled_speech_matches_its_recorded_truth() -> None:
    data = resources.files("remotemedia") / "data"
    truth = json.loads((data / "speech.json").read_text(encoding="utf-8"))
    audio = read_wav(Path(str(data / "speech.wav")))
    assert audio.sample_rate == truth["sample_rate"]
    spans = speech_spans(await vad_events(audio, 20.0))
    expected = [(s["start_ms"], s["end_ms"]) for s in truth["segments"]]
    assert len(spans) == len(expected)
    for (start, end), (true_start, true_end) in zip(spans, expected, strict=True):
        assert abs(start - true_start) <= TOLERANCE_MS
        assert abs(end - true_end) <= TOLERANCE_MS


def test_demo_transcribes_synthesised_speech_over_grpc(capsys: pytest.CaptureFixture[str]) -> None:
    """The README's main job: server process, gRPC client, VAD and Whisper in a worker."""
    assert main(["demo", "--fast"]) == 0
    out = capsys.readouterr().out
    assert "Started `remotemedia serve`" in out
    assert "it exited with status 0" in out
    assert out.count("  [") == 5  # one transcript line per sentence
    rate = float(out.split("Mean word error rate: ")[1].split("%")[0])
    assert rate <= 15.0
