"""Whisper's log-mel features in numpy, as Smart Turn v3 takes them (sans-IO).

The algorithm of Hugging Face's ``WhisperFeatureExtractor`` (80 Slaney mel bands,
25 ms Hann windows every 10 ms, reflect-padded, log10 floored at 8 below the peak,
scaled to about [-1, 1]), for a window of fixed length, with the waveform first
normalised to zero mean and unit variance as Smart Turn was trained. Written here so
that turn detection needs neither transformers nor torch; a test checks it against
the copy pipecat vendors for its own Smart Turn analyser.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["RATE", "log_mel"]

RATE = 16_000
_N_FFT = 400
_HOP = 160
_MELS = 80


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    mel = 3.0 * hz / 200.0
    log_region = hz >= 1000.0
    mel[log_region] = 15.0 + np.log(hz[log_region] / 1000.0) * (27.0 / np.log(6.4))
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    hz = 200.0 * mel / 3.0
    log_region = mel >= 15.0
    hz[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel[log_region] - 15.0))
    return hz


@functools.cache
def _filterbank() -> np.ndarray:
    """Slaney-normalised triangular filters, (frequency bins, mel bands)."""
    low, high = _hz_to_mel(np.array([0.0, RATE / 2]))
    edges = _mel_to_hz(np.linspace(float(low), float(high), _MELS + 2))
    bins = np.linspace(0, RATE // 2, _N_FFT // 2 + 1)
    slopes = edges[np.newaxis, :] - bins[:, np.newaxis]
    widths = np.diff(edges)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters: np.ndarray = np.maximum(0.0, np.minimum(down, up))
    filters *= (2.0 / (edges[2:] - edges[:-2]))[np.newaxis, :]
    return filters


@functools.cache
def _window() -> np.ndarray:
    return np.hanning(_N_FFT + 1)[:-1]  # periodic Hann, as torch.hann_window


def log_mel(samples: np.ndarray, seconds: int = 8) -> np.ndarray:
    """Features of the last ``seconds`` of 16 kHz mono audio: float32 (80, 100 * seconds).

    Shorter audio is padded with silence at the front, so the speech's end is always
    at the window's end (where Smart Turn looks).
    """
    size = RATE * seconds
    audio = np.asarray(samples, np.float32)[-size:]
    audio = np.pad(audio, (size - audio.size, 0))
    audio = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
    padded = np.pad(audio.astype(np.float64), _N_FFT // 2, mode="reflect")
    frames = sliding_window_view(padded, _N_FFT)[::_HOP]
    power = np.abs(np.fft.rfft(frames * _window(), axis=-1)) ** 2
    mel = np.log10(np.maximum(1e-10, power @ _filterbank())).T[:, :-1]
    mel = np.maximum(mel, mel.max() - 8.0)
    features: np.ndarray = ((mel + 4.0) / 4.0).astype(np.float32)
    return features
