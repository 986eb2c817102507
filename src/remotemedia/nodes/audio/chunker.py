"""``AudioChunkerNode``: re-cuts audio into fixed-size chunks."""

from __future__ import annotations

import attrs
import numpy as np

from remotemedia.media import Audio, RuntimeData
from remotemedia.nodes.base import Node
from remotemedia.params import param

__all__ = ["AudioChunkerNode", "ChunkerParams"]


@attrs.frozen
class ChunkerParams:
    """Parameters of :class:`AudioChunkerNode`."""

    chunk_size: int = param(
        512, doc="Frames (samples per channel) per output chunk.", ge=1, le=65_536
    )


class AudioChunkerNode(Node[ChunkerParams]):
    """Cut audio into chunks of exactly chunk_size frames; flush the remainder at end.

    A change of sample rate or channel count flushes the partial chunk first, so a
    chunk never mixes formats.
    """

    node_type = "AudioChunkerNode"
    Params = ChunkerParams
    accepts = frozenset({"audio"})
    produces = frozenset({"audio"})

    def __init__(self, node_id: str, params: ChunkerParams) -> None:
        super().__init__(node_id, params)
        self._pending: list[np.ndarray] = []
        self._pending_frames = 0
        self._format: tuple[int, int] | None = None

    def process(self, data: RuntimeData) -> list[RuntimeData]:
        """Buffer the audio and return every complete chunk."""
        if not isinstance(data, Audio):
            raise TypeError(f"accepts only audio, got {type(data).__name__.lower()}")
        outputs: list[RuntimeData] = []
        fmt = (data.sample_rate, data.channels)
        if fmt != self._format:
            outputs += self.flush()
            self._format = fmt
        size = self.params.chunk_size
        samples = data.samples
        if not samples.size:
            return outputs
        if not self._pending and data.num_frames == size:
            return [*outputs, data]  # the common fast path: already the right size
        self._pending.append(samples)
        self._pending_frames += data.num_frames
        if self._pending_frames < size:
            return outputs
        joined = np.concatenate(self._pending) if len(self._pending) > 1 else samples
        joined.flags.writeable = False  # ours (or already read-only): slices need no copy
        step = size * data.channels
        whole = (joined.size // step) * step
        for start in range(0, whole, step):
            outputs.append(Audio(joined[start : start + step], data.sample_rate, data.channels))
        rest = joined[whole:]
        self._pending = [rest] if rest.size else []
        self._pending_frames = rest.size // data.channels
        return outputs

    def flush(self) -> list[RuntimeData]:
        """Return the partial chunk, shorter than chunk_size, if any."""
        if not self._pending or self._format is None:
            return []
        rate, channels = self._format
        rest = np.concatenate(self._pending)
        self._pending, self._pending_frames = [], 0
        return [Audio(rest, rate, channels)]
