"""Node types of the fault scenarios: stateless, so every input's results stand alone.

A lost input changes no other input's results, which is what lets a scenario's
results be compared input by input with a fault-free run. Importable by worker
processes (the worker imports its node class by module path).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from remotemedia.media import RuntimeData, Text
from remotemedia.nodes import Node, NodeRegistry, builtin_registry


class Words(Node[None]):
    """Yields each word of a text as its own output (several outputs per input)."""

    node_type = "FaultWords"

    async def process(self, data: RuntimeData) -> AsyncIterator[RuntimeData]:
        assert isinstance(data, Text)
        for word in data.text.split():
            yield Text(word)


class Upper(Node[None]):
    """Upper-cases a text (one output per input)."""

    node_type = "FaultUpper"

    def process(self, data: RuntimeData) -> RuntimeData:
        assert isinstance(data, Text)
        return Text(data.text.upper())


class Ender(Node[None]):
    """Passes inputs on and says ``end`` when flushed (a flush with an output)."""

    node_type = "FaultEnder"

    def process(self, data: RuntimeData) -> RuntimeData:
        return data

    def flush(self) -> list[RuntimeData]:
        return [Text("end")]


def registry() -> NodeRegistry:
    """The built-in node types and these."""
    nodes = builtin_registry()
    for cls in (Words, Upper, Ender):
        nodes.register(cls)
    return nodes
