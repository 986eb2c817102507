"""LocalAgreement-2: stable words are those two successive transcripts agree on."""

from __future__ import annotations

import pytest

from remotemedia.nodes.asr.agreement import LocalAgreement, words_of


def test_a_word_is_stable_once_two_transcripts_agree_on_it_and_all_before_it() -> None:
    agreement = LocalAgreement()
    assert agreement.update("The quick") == ("", "The quick")
    assert agreement.update("The quick brown") == ("The quick", "brown")
    assert agreement.update("The quick brown fox jumps") == ("The quick brown", "fox jumps")
    assert agreement.update("The quick brown fox jumped over") == (
        "The quick brown fox",
        "jumped over",
    )


def test_words_compare_without_case_or_punctuation_and_keep_the_newer_spelling() -> None:
    agreement = LocalAgreement()
    agreement.update("hello there")
    assert agreement.update("Hello, there. How") == ("Hello, there.", "How")


def test_a_revised_stable_word_is_never_taken_back() -> None:
    agreement = LocalAgreement()
    agreement.update("I want to")
    assert agreement.update("I want to go") == ("I want to", "go")
    assert agreement.update("I won two goats") == ("I want to", "goats")
    # Agreement goes on from the stable words once transcripts keep them again.
    agreement.update("I want to go home")
    assert agreement.update("I want to go home now") == ("I want to go home", "now")
    assert agreement.stable == ["I", "want", "to", "go", "home"]


def test_a_disagreement_stops_the_stable_prefix_there() -> None:
    agreement = LocalAgreement()
    agreement.update("see the cat run")
    assert agreement.update("see a cat run") == ("see", "a cat run")


def test_punctuation_alone_is_not_a_word() -> None:
    assert words_of("Well - it's, you know... fine!") == ["well", "it's", "you", "know", "fine"]
    agreement = LocalAgreement()
    agreement.update("yes - no")
    assert agreement.update("yes no") == ("yes no", "")


def test_local_agreement_3_needs_three_transcripts_to_agree() -> None:
    agreement = LocalAgreement(n=3)
    agreement.update("the cuts")
    assert agreement.update("the cuts of") == ("", "the cuts of")
    assert agreement.update("the cups of flour") == ("the", "cups of flour")
    # "cups" is in two transcripts now, not yet three.
    assert agreement.update("the cups of flour go") == ("the", "cups of flour go")
    assert agreement.update("the cups of flour go into") == ("the cups of flour", "go into")


def test_local_agreement_needs_at_least_two() -> None:
    with pytest.raises(ValueError, match=r"n >= 2"):
        LocalAgreement(n=1)
