"""How PiperTTSNode cuts a long sentence's phonemes before the model (no model needed)."""

from __future__ import annotations

from remotemedia.nodes.tts.piper import phoneme_parts


def joined(parts: list[list[str]]) -> list[str]:
    return ["".join(part) for part in parts]


def test_phoneme_parts_cut_a_long_sentence_between_words() -> None:
    phonemes = list("wʌn tu θɹi fɔɹ")  # one two three four
    assert joined(phoneme_parts(phonemes, 7)) == ["wʌn tu", "θɹi fɔɹ"]
    assert joined(phoneme_parts(phonemes, 100)) == ["wʌn tu θɹi fɔɹ"]


def test_phoneme_parts_cut_a_word_longer_than_the_limit_where_the_limit_falls() -> None:
    assert joined(phoneme_parts(list("ab abcdefg h"), 3)) == ["ab", "abc", "def", "g h"]
