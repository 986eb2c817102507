"""``FastResampleNode``: streaming sample-rate conversion with soxr."""

from __future__ import annotations

import attrs
import numpy as np
import soxr

from remotemedia.media import Audio, RuntimeData
from remotemedia.nodes.base import Node
from remotemedia.params import param

__all__ = ["FastResampleNode", "ResampleParams"]

_SOXR_QUALITY = {"Low": "LQ", "Medium": "MQ", "High": "HQ"}
MAX_UPSAMPLING = 16
"""Largest output/input rate ratio: 8 kHz to 128 kHz. A larger one is almost surely a
wrong sample rate, and would multiply memory use by as much."""


@attrs.frozen
class ResampleParams:
    """Parameters of :class:`FastResampleNode`."""

    source_rate: int | None = param(
        None,
        doc="Input rate in Hz; omitted or 'auto': taken from the audio.",
        gt=0,
        le=768_000,
        auto="auto",
    )
    target_rate: int | None = param(
        16_000,
        doc="Output rate in Hz; 'auto' or null: keep the input's rate.",
        gt=0,
        le=768_000,
        auto="auto",
    )
    quality: str = param(
        "Medium", doc="soxr quality preset (any case).", choices=("Low", "Medium", "High")
    )
    channels: int | None = param(
        None, doc="Expected channel count; omitted: taken from the audio.", ge=1, le=8
    )


class FastResampleNode(Node[ResampleParams]):
    """Resample audio to target_rate with a per-session streaming soxr resampler.

    The resampler keeps filter state between chunks, so chunk boundaries leave no
    artefacts. If the input rate or channel count changes mid-stream (with
    source_rate omitted), the old stream is flushed and a new one started; with an
    explicit source_rate, a different input rate is an error.
    """

    node_type = "FastResampleNode"
    Params = ResampleParams
    accepts = frozenset({"audio"})
    produces = frozenset({"audio"})

    def __init__(self, node_id: str, params: ResampleParams) -> None:
        super().__init__(node_id, params)
        self._stream: soxr.ResampleStream | None = None
        self._format: tuple[int, int] | None = None  # (input rate, channels)

    def process(self, data: RuntimeData) -> list[RuntimeData]:
        """Resample one chunk; may return nothing while the filter fills."""
        if not isinstance(data, Audio):
            raise TypeError(f"accepts only audio, got {type(data).__name__.lower()}")
        params = self.params
        if params.source_rate is not None and data.sample_rate != params.source_rate:
            raise ValueError(
                f"source_rate is {params.source_rate} Hz but the audio is {data.sample_rate} Hz; "
                "set source_rate to 'auto' to follow the input"
            )
        if params.channels is not None and data.channels != params.channels:
            raise ValueError(
                f"channels is {params.channels} but the audio has {data.channels}; "
                "omit channels to follow the input"
            )
        target = params.target_rate
        if target is not None and target > data.sample_rate * MAX_UPSAMPLING:
            raise ValueError(
                f"resampling {data.sample_rate} Hz to {target} Hz multiplies the data by more "
                f"than {MAX_UPSAMPLING}; check the input's sample_rate"
            )
        outputs: list[RuntimeData] = []
        fmt = (data.sample_rate, data.channels)
        if fmt != self._format:
            outputs += self._drain()
            self._format = fmt
            if params.target_rate is not None and data.sample_rate != params.target_rate:
                self._stream = soxr.ResampleStream(
                    data.sample_rate,
                    params.target_rate,
                    data.channels,
                    dtype="float32",
                    quality=_SOXR_QUALITY[params.quality],
                )
        if self._stream is None:
            outputs.append(data)
            return outputs
        resampled = self._stream.resample_chunk(data.frames())
        if resampled.size:
            outputs.append(self._audio(resampled, data.channels, data))
        return outputs

    def flush(self) -> list[RuntimeData]:
        """Return the samples still inside the resampling filter."""
        return self._drain()

    def _drain(self) -> list[RuntimeData]:
        stream, self._stream = self._stream, None
        if stream is None or self._format is None:
            return []
        tail = stream.resample_chunk(np.zeros((0, self._format[1]), np.float32), last=True)
        return [self._audio(tail, self._format[1], None)] if tail.size else []

    def _audio(self, frames: np.ndarray, channels: int, source: Audio | None) -> Audio:
        # soxr can overshoot [-1, 1] slightly near full-scale transients; that is
        # legitimate audio, so no clipping here.
        metadata = source.metadata if source is not None else {}
        assert self.params.target_rate is not None  # only resampled audio comes here
        return Audio.adopt(frames.reshape(-1), self.params.target_rate, channels, metadata=metadata)
