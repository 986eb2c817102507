"""``LFM2AudioNode`` (alias ``LFM2Node``): a spoken conversation with Liquid AI's LFM2-Audio.

The node is in :mod:`~remotemedia.nodes.lfm2_audio.node`; decoding its output in
:mod:`~remotemedia.nodes.lfm2_audio.decoding`.
"""

from remotemedia.nodes.lfm2_audio.node import (
    LIQUID_AUDIO_ENVIRONMENT,
    LFM2AudioNode,
    LFM2AudioParams,
    LFM2Node,
)

__all__ = ["LIQUID_AUDIO_ENVIRONMENT", "LFM2AudioNode", "LFM2AudioParams", "LFM2Node"]
