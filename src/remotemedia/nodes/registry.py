"""The node registry: which node types exist, and how to build them.

A :class:`NodeRegistry` is a plain object; nothing registers itself on import.
:func:`builtin_registry` returns a new registry holding the built-in node types.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Collection, Iterable, Iterator
from typing import Any, TypeVar

from remotemedia.nodes.asr.whisper import WhisperNode
from remotemedia.nodes.audio.accumulator import AudioBufferAccumulatorNode
from remotemedia.nodes.audio.chunker import AudioChunkerNode
from remotemedia.nodes.audio.resample import FastResampleNode
from remotemedia.nodes.audio.turn import SmartTurnNode
from remotemedia.nodes.audio.vad import SileroVADNode
from remotemedia.nodes.base import Node
from remotemedia.nodes.calculator import CalculatorNode
from remotemedia.nodes.conversation.coordinator import ConversationCoordinatorNode
from remotemedia.nodes.lfm2_audio import LFM2AudioNode, LFM2Node
from remotemedia.nodes.passthrough import Echo, PassThrough
from remotemedia.nodes.text.collector import TextCollectorNode
from remotemedia.nodes.text.openai_chat import OpenAIChatNode
from remotemedia.nodes.transformers import (
    HFPipelineNode,
    LFM2TextNode,
    TransformersPipelineNode,
)
from remotemedia.nodes.tts.piper import PiperTTSNode
from remotemedia.nodes.tts.vibevoice import VibeVoiceNode, VibeVoiceTTSNode
from remotemedia.params import describe_params

__all__ = [
    "BUILTIN_NODE_TYPES",
    "ENTRY_POINT_GROUP",
    "NodeRegistry",
    "builtin_registry",
    "default_registry",
]

logger = logging.getLogger(__name__)

N = TypeVar("N", bound=type[Node[Any]])

BUILTIN_NODE_TYPES: tuple[type[Node[Any]], ...] = (
    PassThrough,
    Echo,
    CalculatorNode,
    TextCollectorNode,
    FastResampleNode,
    AudioChunkerNode,
    SileroVADNode,
    AudioBufferAccumulatorNode,
    WhisperNode,
    PiperTTSNode,
    SmartTurnNode,
    ConversationCoordinatorNode,
    OpenAIChatNode,
    TransformersPipelineNode,
    HFPipelineNode,
    LFM2TextNode,
    LFM2AudioNode,
    LFM2Node,
    VibeVoiceNode,
    VibeVoiceTTSNode,
)


class NodeRegistry:
    """A set of node types, looked up by their manifest name.

    Implements :class:`remotemedia.manifest.NodeCatalog`, so a registry is what
    manifest validation checks node types and params against.
    """

    def __init__(self, node_types: Iterable[type[Node[Any]]] = ()) -> None:
        self._types: dict[str, type[Node[Any]]] = {}
        for cls in node_types:
            self.register(cls)

    def register(self, cls: N) -> N:
        """Add a node type; usable as a class decorator.

        Raises:
            ValueError: The class has no ``node_type`` or the name is already taken
                by another class.
        """
        name = getattr(cls, "node_type", None)
        if not isinstance(name, str) or not name:
            raise ValueError(f"{cls.__qualname__} must set a node_type class attribute.")
        existing = self._types.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"Node type '{name}' is already registered by {existing.__module__}."
                f"{existing.__qualname__}; pick another name for {cls.__qualname__}."
            )
        self._types[name] = cls
        return cls

    def node_types(self) -> Collection[str]:
        """Return the names of every registered node type."""
        return self._types.keys()

    def params_class(self, node_type: str) -> type[Any]:
        """Return the params class of a node type."""
        return self.get(node_type).Params

    def get(self, node_type: str) -> type[Node[Any]]:
        """Return the class of a node type.

        Raises:
            KeyError: No such node type is registered.
        """
        return self._types[node_type]

    def __contains__(self, node_type: object) -> bool:
        return node_type in self._types

    def __iter__(self) -> Iterator[type[Node[Any]]]:
        return iter(self._types.values())

    def describe(self) -> list[dict[str, Any]]:
        """Describe every node type: name, description, params, inputs and outputs.

        Also the Python environment its workers run in (None: the server's).
        """
        return [
            {
                "node_type": cls.node_type,
                "description": cls.describe(),
                "unavailable": cls.unavailable(),
                "environment": cls.environment.describe() if cls.environment else None,
                "accepts": sorted(cls.accepts),
                "produces": sorted(cls.produces),
                "params": describe_params(cls.Params),
            }
            for cls in sorted(self._types.values(), key=lambda c: c.node_type)
        ]


def builtin_registry() -> NodeRegistry:
    """Return a new registry holding the built-in node types."""
    return NodeRegistry(BUILTIN_NODE_TYPES)


ENTRY_POINT_GROUP = "remotemedia.nodes"
"""Packages add node types by naming their Node classes in this entry-point group."""


def default_registry() -> NodeRegistry:
    """The built-in node types plus those installed packages declare as entry points.

    A package adds node types with, in its ``pyproject.toml``::

        [project.entry-points."remotemedia.nodes"]
        MyNode = "my_package.nodes:MyNode"

    A plugin that fails to load is skipped with a warning naming it and the reason,
    so one broken package cannot take every node type down with it.
    """
    registry = builtin_registry()
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            registry.register(_node_class(entry_point))
        except Exception as exc:
            logger.warning(
                "Node plugin %s (%s) was not loaded: %s", entry_point.name, entry_point.value, exc
            )
    return registry


def _node_class(entry_point: importlib.metadata.EntryPoint) -> type[Node[Any]]:
    loaded = entry_point.load()
    if not (isinstance(loaded, type) and issubclass(loaded, Node)):
        raise TypeError(f"{entry_point.value} is not a Node subclass")
    return loaded
