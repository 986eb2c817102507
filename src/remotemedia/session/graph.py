"""Compiling a validated manifest into a pipeline graph (sans-IO).

The graph fixes what the session runs: each node's type and params, its
successors (where its outputs fan out to), its in-degree (how many upstream
producers must finish before it sees end of input), the source nodes (where
client input goes by default) and the sink nodes (whose outputs go to the client:
those without successors, and those the manifest marks ``is_output_node``).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any

import attrs

from remotemedia.errors import ManifestError
from remotemedia.manifest import CheckedManifest, Manifest, NodeCatalog, check_manifest

__all__ = ["Graph", "GraphNode", "compile_graph"]


@attrs.frozen
class GraphNode:
    """One node of a compiled graph.

    Attributes:
        id: The node id.
        node_type: The node type name.
        params: The node's structured params.
        successors: Ids of the nodes its outputs go to, in manifest order.
        predecessors: Ids of the nodes that feed it, in manifest order.
        executor: The manifest's executor override (``inprocess``/``process``), if any.
        output: The manifest marks it ``is_output_node``: its outputs go to the
            client as well as to its successors.
        python: The manifest's Python for the node's worker environment, if any.
        python_deps: The manifest's requirements added to that environment.
    """

    id: str
    node_type: str
    params: Any
    successors: tuple[str, ...]
    predecessors: tuple[str, ...]
    executor: str | None = None
    output: bool = False
    python: str | None = None
    python_deps: tuple[str, ...] = ()

    @property
    def is_source(self) -> bool:
        """True when no node feeds this one."""
        return not self.predecessors

    @property
    def is_sink(self) -> bool:
        """True when this node's outputs go to the client.

        That is a node without successors, or one marked ``is_output_node``.
        """
        return self.output or not self.successors


@attrs.frozen
class Graph:
    """A compiled pipeline.

    Attributes:
        name: The pipeline's name from its metadata.
        nodes: Every node by id, in topological order (sources first).
    """

    name: str
    nodes: Mapping[str, GraphNode]

    @property
    def sources(self) -> tuple[str, ...]:
        """Ids of nodes without predecessors; client input goes here by default."""
        return tuple(n.id for n in self.nodes.values() if n.is_source)

    @property
    def sinks(self) -> tuple[str, ...]:
        """Ids of the nodes whose outputs are the pipeline's results (see ``is_sink``)."""
        return tuple(n.id for n in self.nodes.values() if n.is_sink)


def compile_graph(
    manifest: Manifest, catalog: NodeCatalog, checked: CheckedManifest | None = None
) -> Graph:
    """Validate a manifest and compile it into a :class:`Graph`.

    Args:
        manifest: The pipeline manifest.
        catalog: The node types that may be used.
        checked: The outcome of checking ``manifest`` against ``catalog`` already
            (:func:`~remotemedia.manifest.checked_manifest_from_dict`), if it was:
            then it is not checked again.

    Raises:
        ManifestError: Every problem found in the manifest, with its path.
    """
    if checked is None:
        checked = check_manifest(manifest, catalog)
    if checked.problems:
        raise ManifestError(checked.problems)
    successors: dict[str, list[str]] = {n.id: [] for n in manifest.nodes}
    predecessors: dict[str, list[str]] = {n.id: [] for n in manifest.nodes}
    for connection in manifest.connections:
        # A repeated connection would deliver every output twice; treat it as one.
        if connection.target not in successors[connection.source]:
            successors[connection.source].append(connection.target)
            predecessors[connection.target].append(connection.source)
    nodes = {
        spec.id: GraphNode(
            id=spec.id,
            node_type=spec.node_type,
            params=checked.params[spec.id],
            successors=tuple(successors[spec.id]),
            predecessors=tuple(predecessors[spec.id]),
            executor=spec.executor,
            output=spec.is_output_node,
            python=spec.python,
            python_deps=tuple(spec.python_deps),
        )
        for spec in manifest.nodes
    }
    order = _topological_order([n.id for n in manifest.nodes], successors)
    return Graph(name=manifest.metadata.name, nodes={node_id: nodes[node_id] for node_id in order})


def _topological_order(ids: list[str], successors: Mapping[str, list[str]]) -> list[str]:
    """Kahn's algorithm; among nodes ready at once, the earlier in the manifest goes first."""
    position = {node_id: index for index, node_id in enumerate(ids)}
    indegree = dict.fromkeys(ids, 0)
    for targets in successors.values():
        for target in targets:
            indegree[target] += 1
    ready = [position[node_id] for node_id in ids if indegree[node_id] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        node_id = ids[heapq.heappop(ready)]
        order.append(node_id)
        for target in successors[node_id]:
            indegree[target] -= 1
            if indegree[target] == 0:
                heapq.heappush(ready, position[target])
    return order
