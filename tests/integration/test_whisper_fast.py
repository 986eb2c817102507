"""Whisper's fast path (short encoder window, no timestamps) against its full path.

On the sixty test sentences the fast path may cost at most one point of word error
rate over faster-whisper's own transcription (the issue's bound); both run the
packaged tiny.en model on Piper's speech of the same sentences.
"""

from __future__ import annotations

import numpy as np
import pytest
import soxr
import trio

from remotemedia.media import Audio, Control
from remotemedia.nodes.asr.agreement import words_of
from remotemedia.nodes.asr.whisper import WhisperNode, WhisperParams
from remotemedia.nodes.asr.window import WindowedWhisper, looks_like_a_loop
from remotemedia.nodes.audio.accumulator import CANCEL
from remotemedia.testing import TEST_SENTENCES, synthesize_speech, word_error_rate

pytest.importorskip("piper", reason="needs remotemedia[piper]")
pytest.importorskip("faster_whisper", reason="needs remotemedia[whisper]")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def utterances() -> list[Audio]:
    """Each test sentence as its own utterance, with the accumulator's 100 ms of pre-roll."""
    sample = synthesize_speech(TEST_SENTENCES, gap_s=0.5, lead_s=0.2, tail_s=0.2)
    rate = sample.audio.sample_rate
    cuts = []
    for segment in sample.segments:
        start = int((segment.start_ms - 100) * rate / 1000)
        end = int((segment.end_ms + 100) * rate / 1000)
        cuts.append(Audio(np.ascontiguousarray(sample.audio.samples[start:end]), rate))
    return cuts


async def _transcribe(params: WhisperParams, utterances: list[Audio]) -> tuple[str, WhisperNode]:
    node = WhisperNode("whisper", params)
    await node.initialize()
    texts = []
    for utterance in utterances:
        (result,) = await node.process(utterance)
        texts.append(result.value["text"])
    return " ".join(texts), node


async def test_the_fast_path_costs_at_most_one_point_of_word_error_rate(
    utterances: list[Audio],
) -> None:
    truth = " ".join(TEST_SENTENCES)
    with trio.fail_after(300):
        fast, node = await _transcribe(WhisperParams(), utterances)
        # The defaults before the fast path: faster-whisper's own, greedy.
        full, _ = await _transcribe(
            WhisperParams(encoder_frames=3000, without_timestamps=False, beam_size=1), utterances
        )
    fast_wer, full_wer = word_error_rate(truth, fast), word_error_rate(truth, full)
    assert fast_wer <= full_wer + 0.01, (fast_wer, full_wer, fast)
    assert fast_wer <= 0.05, fast  # and it is still a good transcription
    # Loops are rare on clean speech.
    assert node.counts["full_window_fallback"] <= len(utterances) // 10


async def test_a_window_too_short_loops_and_the_fallback_repairs_it(
    utterances: list[Audio],
) -> None:
    # 800 frames (8 s) is below what the node allows (1200): there the decoder loops
    # on some utterances. Found by the detector, they are decoded again on the full window.
    with trio.fail_after(300):
        node = WhisperNode("whisper", WhisperParams())
        await node.initialize()
        resampled = [
            soxr.resample(u.samples, u.sample_rate, 16_000).astype(np.float32) for u in utterances
        ]
        looping = WindowedWhisper(node.model, frames=800, language="en", loop_fallback=False)
        repaired = WindowedWhisper(node.model, frames=800, language="en")
        raw = [looping.transcribe(a) for a in resampled]
        fixed = [repaired.transcribe(a) for a in resampled]
    truth = " ".join(TEST_SENTENCES)
    loops = [
        i
        for i, (d, a) in enumerate(zip(raw, resampled, strict=True))
        if looks_like_a_loop(d.text, d.tokens, a.size / 16_000)
    ]
    assert loops, "no loop at 800 frames: the fallback is not exercised"
    assert all(fixed[i].fell_back for i in loops)
    raw_wer = word_error_rate(truth, " ".join(d.text for d in raw))
    fixed_wer = word_error_rate(truth, " ".join(d.text for d in fixed))
    assert fixed_wer < raw_wer
    assert fixed_wer <= 0.05


async def test_a_speculation_is_held_until_committed_and_dropped_when_cancelled(
    utterances: list[Audio],
) -> None:
    node = WhisperNode("whisper", WhisperParams())
    first, second = utterances[0], utterances[1]

    def tagged(audio: Audio, **metadata: str) -> Audio:
        return Audio(audio.samples, audio.sample_rate, metadata={"end_ms": 1.0, **metadata})

    with trio.fail_after(120):
        await node.initialize()
        # Transcribed at once, but nothing goes out until the commit.
        assert await node.process(tagged(first, speculation="s-1")) == []
        (committed,) = await node.process(tagged(first, commits="s-1"))
        # A cancelled one is dropped: an utterance that (wrongly) commits its id is
        # transcribed for itself, never answered with the stale transcript.
        assert await node.process(tagged(second, speculation="s-2")) == []
        assert await node.process(Control(CANCEL, "s-2")) == []
        (fresh,) = await node.process(tagged(first, commits="s-2"))
    assert word_error_rate(TEST_SENTENCES[0], committed.value["text"]) <= 0.2
    assert word_error_rate(TEST_SENTENCES[0], fresh.value["text"]) <= 0.2


@pytest.mark.parametrize("keep_stable", [False, True])
async def test_interims_grow_with_the_utterance_and_the_final_rarely_revises_a_stable_word(
    utterances: list[Audio], keep_stable: bool
) -> None:
    node = WhisperNode("whisper", WhisperParams(keep_stable=keep_stable))
    longest = sorted(utterances, key=lambda a: a.num_frames)[-10:]
    stable_before_final = final_words = revised = 0
    with trio.fail_after(300):
        await node.initialize()
        for number, utterance in enumerate(longest):
            name = f"u{number}"
            rate, samples = utterance.sample_rate, utterance.samples
            interims = []
            for end in range(rate // 2, samples.size, rate // 2):  # every 0.5 s, as it grows
                cut = Audio(samples[:end], rate, metadata={"interim": name, "utterance": name})
                interims += [r.value for r in await node.process(cut)]
            (final,) = await node.process(Audio(samples, rate, metadata={"utterance": name}))
            assert final.value["utterance"] == name
            said = words_of(final.value["text"])
            assert interims, f"no interim for a {samples.size / rate:.1f} s utterance"
            for interim in interims:
                assert interim["interim"] is True
                assert interim["utterance"] == name
            stable = words_of(interims[-1]["stable"])
            revised += said[: len(stable)] != stable
            stable_before_final += len(stable)
            final_words += len(said)
    # LocalAgreement-2's stable words can still be wrong: tiny.en revised them in 7 of
    # the 60 test sentences once it heard the whole one (BENCHMARKS.md); keep_stable
    # makes the final keep them, so none is ever revised.
    assert revised <= (0 if keep_stable else 3), revised
    # Interims every 0.5 s of these 2-4 s sentences confirm a good part of them early.
    assert stable_before_final >= 0.4 * final_words, (stable_before_final, final_words)
