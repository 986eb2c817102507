"""Node types: the contract every node follows, the registry, and the built-in nodes."""

from remotemedia.nodes.base import ANY, Node, NoParams, Output
from remotemedia.nodes.registry import (
    BUILTIN_NODE_TYPES,
    ENTRY_POINT_GROUP,
    NodeRegistry,
    builtin_registry,
    default_registry,
)

__all__ = [
    "ANY",
    "BUILTIN_NODE_TYPES",
    "ENTRY_POINT_GROUP",
    "NoParams",
    "Node",
    "NodeRegistry",
    "Output",
    "builtin_registry",
    "default_registry",
]
