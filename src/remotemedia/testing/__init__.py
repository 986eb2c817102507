"""Public testing kit: helpers for testing pipelines and nodes built on remotemedia."""

from remotemedia.testing.sentences import TEST_SENTENCES
from remotemedia.testing.speech import SpeechSample, SpeechSegment, synthesize_speech
from remotemedia.testing.wer import normalize_words, word_error_rate

__all__ = [
    "TEST_SENTENCES",
    "SpeechSample",
    "SpeechSegment",
    "normalize_words",
    "synthesize_speech",
    "word_error_rate",
]
