"""Nodes that forward their input unchanged: ``PassThrough`` and ``Echo``."""

from __future__ import annotations

from remotemedia.media import RuntimeData
from remotemedia.nodes.base import Node, NoParams

__all__ = ["Echo", "PassThrough"]


class PassThrough(Node[NoParams]):
    """Forward every input unchanged."""

    node_type = "PassThrough"

    def process(self, data: RuntimeData) -> RuntimeData:
        """Return the input itself."""
        return data


class Echo(PassThrough):
    """Echo every input back unchanged (the original's test node)."""

    node_type = "Echo"
