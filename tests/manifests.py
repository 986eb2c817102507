"""Manifests shared by several test modules."""

# One manifest with four different problems: a duplicate id, a dangling
# connection, a cycle and an out-of-range param.
FOUR_PROBLEMS = """\
version: v1
nodes:
  - {id: resample, node_type: FastResampleNode}
  - {id: chunker, node_type: AudioChunkerNode}
  - {id: vad, node_type: SileroVADNode, params: {threshold: 1.5}}
  - {id: chunker, node_type: PassThrough}
connections:
  - {from: resample, to: chunker}
  - {from: chunker, to: vad}
  - {from: vad, to: resample}
  - {from: vad, to: output}
"""
