"""Whisper on a shorter encoder window: the fast path of :class:`WhisperNode`.

faster-whisper always pads an utterance's features to Whisper's 30 s window (3000
mel frames), and the encoder's cost grows with the window, not with the speech: on
two CPU cores it is most of a short utterance's transcription time. CTranslate2's
Whisper accepts shorter inputs, so here an utterance is padded only to
``frames`` (2000 = 20 s by default) and decoded without timestamps in one
``encode`` + ``generate`` call through faster-whisper's public pieces (its feature
extractor, tokenizer and prompt) and CTranslate2's own API. With the full window and
timestamps this gives exactly faster-whisper's transcript.

A window much shorter than the model was trained on can make the decoder loop,
repeating a phrase until its length limit; :func:`looks_like_a_loop` spots that
(text that compresses too well, or far more tokens than the speech could hold) and
the utterance is decoded again on the full window.
"""

from __future__ import annotations

import functools
import zlib
from typing import Any

import attrs
import numpy as np

__all__ = ["FULL_WINDOW", "LONGEST_S", "Decoded", "WindowedWhisper", "looks_like_a_loop"]

FULL_WINDOW = 3000
"""Whisper's own window in mel frames (100 per second): 30 s."""
LONGEST_S = FULL_WINDOW / 100
"""Seconds of audio one window holds; longer audio needs faster-whisper's seeking."""

_MAX_COMPRESSION = 2.0
"""Text that zlib compresses more than this is repeating itself (faster-whisper uses 2.4
for its temperature fallback; a loop on a short window shows well above 2)."""
_MAX_TOKENS_PER_SECOND = 8.0
"""Fast speech is 4-5 tokens a second."""
_TOKEN_ALLOWANCE = 12
"""Tokens a very short utterance may have regardless of its length (punctuation, a name)."""


@attrs.frozen
class Decoded:
    """One utterance's transcript from :class:`WindowedWhisper`.

    Attributes:
        text: The transcript.
        tokens: How many tokens the decoder produced.
        frames: The encoder window it was decoded on.
        fell_back: True when the short window looped and the full one was used.
    """

    text: str
    tokens: int
    frames: int
    fell_back: bool
    avg_logprob: float = 0.0


def looks_like_a_loop(text: str, tokens: int, seconds: float) -> bool:
    """True if a transcript looks like a decoder loop rather than speech (sans-IO)."""
    if tokens > max(_MAX_TOKENS_PER_SECOND * seconds, _TOKEN_ALLOWANCE):
        return True
    data = text.encode()
    return len(data) > 0 and len(data) / len(zlib.compress(data)) > _MAX_COMPRESSION


class WindowedWhisper:
    """Whisper decoding on a window of ``frames`` mel frames.

    Args:
        model: A loaded ``faster_whisper.WhisperModel``.
        frames: The encoder window (1200-3000); audio longer than it uses the full window.
        language: The language code for multilingual models (English-only ones ignore it).
        initial_prompt: Text that primes the decoder, if any.
        temperature: 0 decodes greedily; above 0 samples at that temperature.
        loop_fallback: Decode again on the full window when the result looks like a loop.
        timestamps: Let the decoder predict timestamp tokens (then dropped from the text).
        beam_size: Beam width when decoding at temperature 0 (1: greedy).
    """

    def __init__(
        self,
        model: Any,
        *,
        frames: int,
        language: str | None,
        initial_prompt: str | None = None,
        temperature: float = 0.0,
        loop_fallback: bool = True,
        timestamps: bool = False,
        beam_size: int = 1,
    ) -> None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self._model = model
        self.frames = frames
        self.temperature = temperature
        self.loop_fallback = loop_fallback
        self.beam_size = beam_size
        multilingual = bool(model.model.is_multilingual)
        self._tokenizer = Tokenizer(
            model.hf_tokenizer,
            multilingual,
            task="transcribe",
            language=(language or "en") if multilingual else None,
        )
        previous = self._tokenizer.encode(" " + initial_prompt.strip()) if initial_prompt else []
        self._prompt_of = functools.partial(
            model.get_prompt, self._tokenizer, previous, without_timestamps=not timestamps
        )
        self._prompt = self._prompt_of()
        self._suppress = get_suppressed_tokens(self._tokenizer, (-1,))

    def transcribe(
        self, samples: np.ndarray, beam_size: int | None = None, prefix: str = ""
    ) -> Decoded:
        """Transcribe 16 kHz mono samples of at most :data:`LONGEST_S` seconds.

        ``beam_size`` overrides the decoder's own for this call; a ``prefix`` is text
        the transcript must start with (the decoder goes on from it).
        """
        prompt = self._prompt_of(prefix=prefix) if prefix else self._prompt
        # As faster-whisper does: the last frame straddles the padding, so it is left out.
        features = self._model.feature_extractor(samples)[:, :-1][:, :FULL_WINDOW]
        seconds = samples.size / 16_000
        frames = self.frames if features.shape[1] <= self.frames else FULL_WINDOW
        beam = beam_size or self.beam_size
        text, tokens, logprob = self._decode(features, frames, beam, prompt)
        if frames < FULL_WINDOW and self.loop_fallback and looks_like_a_loop(text, tokens, seconds):
            text, tokens, logprob = self._decode(features, FULL_WINDOW, beam, prompt)
            return Decoded(text, tokens, FULL_WINDOW, fell_back=True, avg_logprob=logprob)
        return Decoded(text, tokens, frames, fell_back=False, avg_logprob=logprob)

    def _decode(
        self, features: np.ndarray, frames: int, beam_size: int, prompt: list[int]
    ) -> tuple[str, int, float]:
        padded = np.zeros((1, features.shape[0], frames), np.float32)
        padded[0, :, : features.shape[1]] = features
        encoded = self._model.encode(padded)
        greedy = self.temperature == 0
        (result,) = self._model.model.generate(
            encoded,
            [prompt],
            beam_size=beam_size if greedy else 1,
            max_length=self._model.max_length,
            suppress_blank=True,
            suppress_tokens=self._suppress,
            sampling_topk=1 if greedy else 0,
            sampling_temperature=1.0 if greedy else self.temperature,
            return_scores=True,
        )
        generated = result.sequences_ids[0]
        # As faster-whisper computes it: the score is the sum of log probabilities
        # over the length (length penalty 1); one more for the end token.
        logprob = result.scores[0] * len(generated) / (len(generated) + 1)
        # Timestamp tokens (when asked for) and special tokens are not text.
        ids = [t for t in generated if t < self._tokenizer.eot]
        return self._tokenizer.decode(ids).strip(), len(ids), logprob
