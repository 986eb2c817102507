"""Model nodes on Hugging Face transformers: any pipeline, and LFM2 chat.

They run in worker processes whose Python environment has torch and transformers;
the server imports neither.
"""

from remotemedia.nodes.transformers.lfm2_text import LFM2TextNode, LFM2TextParams
from remotemedia.nodes.transformers.pipeline import (
    HFPipelineNode,
    TransformersPipelineNode,
    TransformersPipelineParams,
)

__all__ = [
    "HFPipelineNode",
    "LFM2TextNode",
    "LFM2TextParams",
    "TransformersPipelineNode",
    "TransformersPipelineParams",
]
