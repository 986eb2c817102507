"""The ``v1`` pipeline manifest as attrs classes.

Field names, defaults and optional fields follow the original runtime's manifest
(see the wire-protocol reference, section 2) so that existing manifests load
unchanged. Unlike the original, unknown keys are errors, except inside
``metadata``, which is free-form description (the original's own examples put a
``category`` there). Inside a node's ``params``, names the node type does not declare
are ignored with a warning, as the original ignored them (see
:mod:`~remotemedia.manifest.validate`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

__all__ = [
    "Capabilities",
    "Connection",
    "CpuRequirement",
    "Execution",
    "GpuRequirement",
    "Manifest",
    "Metadata",
    "NodeSpec",
    "PythonEnv",
]

RuntimeHint = Literal["rust_python", "cpython", "cpython_wasm", "auto"]
Placement = Literal["local", "remote", "prefer_local", "prefer_remote", "auto"]


@attrs.frozen
class Metadata:
    """Descriptive metadata of a pipeline.

    Attributes:
        name: A short name for the pipeline.
        description: What the pipeline does.
        created_at: When it was written (free-form, usually ISO 8601).
        auto_negotiate: Accepted for compatibility with the original; unused.
        extra: Any other descriptive keys, kept as given.
    """

    name: str = ""
    description: str = ""
    created_at: str = ""
    auto_negotiate: bool = False
    extra: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class GpuRequirement:
    """A node's GPU requirement (accepted and carried; scheduling ignores it for now)."""

    type: str = ""
    min_memory_gb: float | None = None
    required: bool = True


@attrs.frozen
class CpuRequirement:
    """A node's CPU requirement (accepted and carried)."""

    cores: int | None = None
    arch: str | None = None


@attrs.frozen
class Capabilities:
    """Hardware a node asks for."""

    gpu: GpuRequirement | None = None
    cpu: CpuRequirement | None = None
    memory_gb: float | None = None


@attrs.frozen
class Execution:
    """Placement preference of a node (accepted and carried)."""

    placement: Placement = "auto"
    reason: str | None = None
    fallback: str | None = None


@attrs.frozen
class NodeSpec:
    """One node of a pipeline.

    Attributes:
        id: Unique id of the node within the manifest.
        node_type: The registered node type, e.g. ``SileroVADNode``.
        params: The node's parameters, checked against the node type's schema.
        is_streaming: Accepted for compatibility; every node streams here.
        is_output_node: Its outputs also go to the client, keyed by its id, besides
            going to its successors (nodes without successors always do).
        capabilities: Hardware requirements (carried, not enforced yet).
        host: Remote host hint (carried, not used yet).
        runtime_hint: The original's runtime hint (carried).
        execution: Placement preference (carried).
        python_deps: Requirements added to the node's worker environment (PEP 508
            strings); the node then runs in a Python environment of its own. A server
            accepts them from clients only with ``--allow-client-environments``.
        fast_path: Accepted for compatibility.
        media_capabilities: Accepted for compatibility.
        docker: Accepted for compatibility.
        input_types: Declared input kinds (carried).
        output_types: Declared output kinds (carried).
        executor: Where the node runs, overriding the server's executor rules:
            ``inprocess`` (a task in the session) or ``process`` (a worker process).
        python: The Python of the node's worker environment (``"3.12"``,
            ``">=3.12"`` or a path), replacing the node type's; as ``python_deps``,
            from clients only with ``--allow-client-environments``.
    """

    id: str
    node_type: str
    params: Mapping[str, Any] = attrs.field(factory=dict)
    is_streaming: bool = False
    is_output_node: bool = False
    capabilities: Capabilities | None = None
    host: str | None = None
    runtime_hint: RuntimeHint | None = None
    execution: Execution | None = None
    python_deps: list[str] = attrs.field(factory=list)
    fast_path: bool = False
    media_capabilities: Mapping[str, Any] | None = None
    docker: Mapping[str, Any] | None = None
    input_types: list[str] = attrs.field(factory=list)
    output_types: list[str] = attrs.field(factory=list)
    executor: Literal["inprocess", "process"] | None = None
    python: str | None = None


@attrs.frozen
class Connection:
    """A directed edge: every output of ``source`` goes to ``target``.

    In manifests the keys are ``from`` and ``to``.
    """

    source: str
    target: str


@attrs.frozen
class PythonEnv:
    """The original's managed Python environment request (accepted and carried)."""

    python_version: str | None = None
    scope: str | None = None
    extra_deps: list[str] = attrs.field(factory=list)


@attrs.frozen
class Manifest:
    """A pipeline: a graph of nodes and the connections between them.

    Attributes:
        version: Manifest format version; only ``"v1"`` is supported.
        metadata: Descriptive metadata.
        nodes: The nodes, in the order written.
        connections: The edges between nodes.
        python_env: The original's Python environment request (carried).
    """

    version: str
    nodes: list[NodeSpec]
    metadata: Metadata = attrs.field(factory=Metadata)
    connections: list[Connection] = attrs.field(factory=list)
    python_env: PythonEnv | None = None

    def node(self, node_id: str) -> NodeSpec:
        """Return the node with this id.

        Raises:
            KeyError: No node has this id.
        """
        for spec in self.nodes:
            if spec.id == node_id:
                return spec
        raise KeyError(node_id)
