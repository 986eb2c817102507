"""The loop detector of Whisper's short-window fast path (sans-IO)."""

from __future__ import annotations

import pytest

from remotemedia.nodes.asr.window import looks_like_a_loop


@pytest.mark.parametrize(
    ("text", "tokens", "seconds"),
    [
        ("What is the weather like in Paris this afternoon?", 11, 2.6),
        ("Yes.", 2, 0.4),
        ("No, I meant the other one.", 8, 0.9),  # short and quick: within the allowance
        ("", 0, 1.0),
    ],
)
def test_speech_is_not_a_loop(text: str, tokens: int, seconds: float) -> None:
    assert not looks_like_a_loop(text, tokens, seconds)


def test_a_repeated_phrase_is_a_loop() -> None:
    text = " ".join(["I think so."] * 20)
    assert looks_like_a_loop(text, 60, 10.0)  # few tokens a second, but it compresses 5:1


def test_more_tokens_than_speech_can_hold_is_a_loop() -> None:
    # 1 s of audio cannot hold 40 tokens, whatever they say.
    text = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike"
    assert looks_like_a_loop(text, 40, 1.0)
