"""Public testing kit: helpers for testing pipelines and nodes built on remotemedia."""

from remotemedia.testing.speech import SpeechSample, SpeechSegment, synthesize_speech

__all__ = ["SpeechSample", "SpeechSegment", "synthesize_speech"]
