"""Checking a structured manifest: graph rules and each node's params.

Reports every problem at once, each with its JSON path:

1. ``version`` must be ``"v1"``.
2. There must be at least one node.
3. Node ids must be unique, non-empty, and free of control characters and unpaired
   surrogates (any other text is fine, emoji and format characters included).
4. Every ``node_type`` must be known to the catalog (the closest known name is suggested).
5. Every connection endpoint must name a node.
6. The connections must not form a cycle (the nodes of each cycle are named).
7. Each node's params must satisfy its node type's params class.
8. A param the node type does not declare is a warning (a :class:`ParamWarning`) and
   is ignored, as the original runtime ignored it: manifests written for the original
   pass such params (its CalculatorNode examples send ``value``). With
   ``strict_params`` it is a problem instead. Misspelled node *fields* stay problems
   (see :mod:`~remotemedia.manifest.load`).

Sans-IO: the node catalog is passed in, so this module knows nothing of node classes.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from remotemedia.environments.spec import check_requirement, python_specifier
from remotemedia.errors import NodeEnvironmentError, Problem
from remotemedia.manifest.schema import Connection, Manifest, NodeSpec
from remotemedia.params import (
    UnknownParam,
    closest,
    count_unknown_params,
    structure_params,
    unknown_params,
)

__all__ = ["CheckedManifest", "NodeCatalog", "ParamWarning", "check_manifest", "find_cycles"]

SUPPORTED_VERSIONS = ("v1",)

MAX_PARAM_WARNINGS = 10
"""Unknown params of one node warned about one by one; the rest get one summary warning."""


class NodeCatalog(Protocol):
    """What manifest validation needs to know about node types."""

    def node_types(self) -> Collection[str]:
        """Return the names of every known node type."""
        ...

    def params_class(self, node_type: str) -> type[Any]:
        """Return the attrs params class of a known node type."""
        ...


@attrs.frozen
class ParamWarning:
    """A node param that the node type does not declare; it is ignored.

    Attributes:
        node_id: The node whose params hold it.
        path: Where it is, such as ``$.nodes[0].params.value``.
        param: Its name as written.
        closest: The most similar declared param name, or None if none is similar.
        message: What happens to it and what to do, as a sentence.
    """

    node_id: str
    path: str
    param: str
    closest: str | None
    message: str

    @classmethod
    def of(cls, node_id: str, path: str, unknown: UnknownParam) -> ParamWarning:
        """The warning for one unknown param of node ``node_id`` at ``path``."""
        message = f"{unknown.describe()} It is ignored; remove it or correct its name."
        return cls(node_id, path, unknown.name, unknown.closest, message)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@attrs.frozen
class CheckedManifest:
    """The outcome of :func:`check_manifest`.

    Attributes:
        problems: Every problem found; empty when the manifest is valid.
        params: Each node's structured params instance, by node id (only for nodes
            whose params are valid).
        warnings: Params that node types do not declare, which are ignored (empty
            when checked with ``strict_params``: they are problems then).
    """

    problems: list[Problem]
    params: Mapping[str, Any]
    warnings: list[ParamWarning] = attrs.field(factory=list)


def check_manifest(
    manifest: Manifest,
    catalog: NodeCatalog,
    *,
    unparsed_node_ids: Collection[str] = (),
    node_positions: Sequence[int] | None = None,
    connection_positions: Sequence[int] | None = None,
    strict_params: bool = False,
) -> CheckedManifest:
    """Check a manifest's graph and params against a node catalog.

    Args:
        manifest: The structured manifest.
        catalog: The node types that may be used.
        unparsed_node_ids: Ids of nodes that exist in the document but failed to
            structure; connections to them are not reported as dangling.
        node_positions: Each node's index in the document, when some nodes were
            left out because they failed to structure (default: 0, 1, 2, ...).
        connection_positions: The same for connections.
        strict_params: Report params that a node type does not declare as problems
            instead of warnings.

    Returns:
        Every problem found, the params of each valid node, and the warnings.
    """
    node_at = list(node_positions or range(len(manifest.nodes)))
    connection_at = list(connection_positions or range(len(manifest.connections)))
    problems = _header_problems(manifest, unparsed_node_ids)
    positions, found = _check_node_ids(manifest.nodes, node_at)
    problems += found
    for index, node in enumerate(manifest.nodes):
        problems += _environment_problems(node, f"$.nodes[{node_at[index]}]")
    params, warnings, found = _check_params(
        manifest.nodes, node_at, positions, catalog, strict_params
    )
    problems += found
    all_ids = set(positions) | set(unparsed_node_ids)
    problems += _connection_problems(manifest.connections, connection_at, all_ids)
    problems += _cycle_problems(manifest.connections, connection_at, positions)
    return CheckedManifest(problems, params, warnings)


def _header_problems(manifest: Manifest, unparsed_node_ids: Collection[str]) -> list[Problem]:
    """Rules 1 and 2: a supported version, and at least one node."""
    problems: list[Problem] = []
    if manifest.version not in SUPPORTED_VERSIONS and manifest.version:
        problems.append(
            Problem(
                "$.version",
                f'unsupported manifest version {manifest.version!r}; use "v1".',
            )
        )
    if not manifest.nodes and not unparsed_node_ids:
        problems.append(Problem("$.nodes", "a pipeline needs at least one node."))
    return problems


def _check_node_ids(
    nodes: Sequence[NodeSpec], node_at: Sequence[int]
) -> tuple[dict[str, int], list[Problem]]:
    """Rule 3: the problems of the node ids, and the index of each id's first node."""
    problems: list[Problem] = []
    positions: dict[str, int] = {}
    for index, node in enumerate(nodes):
        path = f"$.nodes[{node_at[index]}].id"
        unprintable = _unprintable(node.id)
        if not node.id.strip():
            problems.append(Problem(path, "node id must not be empty."))
        elif node.id in positions:
            first = node_at[positions[node.id]]
            problems.append(
                Problem(
                    path,
                    f"duplicate node id '{node.id}' (first used at $.nodes[{first}]); "
                    "give every node a unique id.",
                )
            )
        else:
            # Known even when unprintable: its connections are not dangling.
            positions[node.id] = index
        if unprintable and node.id.strip():
            problems.append(
                Problem(
                    path,
                    f"node id {node.id!r} contains {unprintable}; "
                    "use only printable characters in node ids.",
                )
            )
    return positions, problems


def _check_params(
    nodes: Sequence[NodeSpec],
    node_at: Sequence[int],
    positions: Mapping[str, int],
    catalog: NodeCatalog,
    strict_params: bool,
) -> tuple[dict[str, Any], list[ParamWarning], list[Problem]]:
    """Rules 4, 7 and 8: known node types and valid params.

    Returns:
        The params of each valid node (whose id is its own), the warnings and the problems.
    """
    known_types = catalog.node_types()
    params: dict[str, Any] = {}
    warnings: list[ParamWarning] = []
    problems: list[Problem] = []
    for index, node in enumerate(nodes):
        if node.node_type not in known_types:
            guess = closest(node.node_type, known_types)
            hint = f" Did you mean '{guess}'?" if guess else ""
            problems.append(
                Problem(
                    f"$.nodes[{node_at[index]}].node_type",
                    f"unknown node type '{node.node_type}'.{hint} "
                    "Run `remotemedia nodes` to list the available types.",
                )
            )
            continue
        params_class = catalog.params_class(node.node_type)
        base = f"$.nodes[{node_at[index]}].params"
        instance, found = structure_params(
            params_class, node.params, base, ignore_unknown=not strict_params
        )
        problems += found
        if not strict_params:
            warnings += _param_warnings(node.id, base, params_class, node.params)
        if instance is not None and positions.get(node.id) == index:
            params[node.id] = instance
    return params, warnings, problems


def _connection_problems(
    connections: Sequence[Connection], connection_at: Sequence[int], all_ids: Collection[str]
) -> list[Problem]:
    """Rule 5: every connection endpoint names a node (of ``all_ids``)."""
    problems: list[Problem] = []
    for index, connection in enumerate(connections):
        for key, endpoint in (("from", connection.source), ("to", connection.target)):
            if endpoint not in all_ids:
                guess = closest(endpoint, all_ids)
                hint = f" Did you mean '{guess}'?" if guess else ""
                problems.append(
                    Problem(
                        f"$.connections[{connection_at[index]}].{key}",
                        f"connection refers to unknown node '{endpoint}'.{hint}",
                    )
                )
    return problems


def _cycle_problems(
    connections: Sequence[Connection], connection_at: Sequence[int], node_ids: Iterable[str]
) -> list[Problem]:
    """Rule 6: one problem per cycle, at the connection that closes it."""
    problems: list[Problem] = []
    edges = [(c.source, c.target) for c in connections]
    for cycle in find_cycles(node_ids, edges):
        loop = " -> ".join([*cycle, cycle[0]])
        index = edges.index((cycle[-1], cycle[0]))
        problems.append(
            Problem(
                f"$.connections[{connection_at[index]}]",
                f"connections form a cycle: {loop}; pipelines must be acyclic.",
            )
        )
    return problems


def _environment_problems(node: NodeSpec, path: str) -> list[Problem]:
    """Problems of a node's ``python`` and ``python_deps`` (each must be usable by pip)."""
    problems: list[Problem] = []
    if node.python is not None:
        try:
            python_specifier(node.python)
        except NodeEnvironmentError as exc:
            problems.append(Problem(f"{path}.python", exc.message))
    for index, requirement in enumerate(node.python_deps):
        try:
            check_requirement(requirement)
        except NodeEnvironmentError as exc:
            problems.append(Problem(f"{path}.python_deps[{index}]", exc.message))
    return problems


def _unprintable(node_id: str) -> str:
    """Describe the first character of ``node_id`` that has no place in an id, or ''.

    Control characters are invisible in logs and messages (a newline in an id forges
    log lines) and unpaired surrogates cannot be encoded at all, so neither can name
    a node. Format characters (category Cf) stay allowed: emoji sequences need them.
    """
    for char in node_id:
        category = unicodedata.category(char)
        if category == "Cc":
            return f"the control character U+{ord(char):04X}"
        if category == "Cs":
            return f"the unpaired surrogate U+{ord(char):04X}"
    return ""


def _param_warnings(node_id: str, base: str, params_class: type, raw: Any) -> list[ParamWarning]:
    """The warnings for a node's unknown params: each of the first few, then a summary."""
    listed = unknown_params(params_class, raw, limit=MAX_PARAM_WARNINGS)
    warnings = [ParamWarning.of(node_id, f"{base}.{u.name}", u) for u in listed]
    rest = count_unknown_params(params_class, raw) - len(listed)
    if rest > 0:
        message = (
            f"{rest} more params that this node type does not declare are ignored too; remove them."
        )
        warnings.append(ParamWarning(node_id, base, "...", None, message))
    return warnings


def find_cycles(nodes: Iterable[str], edges: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Find the cycles of a directed graph, one per strongly connected component.

    Args:
        nodes: The node ids, in a stable order.
        edges: Directed edges; edges touching unknown nodes are ignored.

    Returns:
        For each cycle, its nodes in edge order starting from the earliest listed
        node. Self-loops are cycles of one node.
    """
    order = {node: i for i, node in enumerate(nodes)}
    successors: dict[str, list[str]] = {node: [] for node in order}
    for source, target in edges:
        if source in order and target in order and target not in successors[source]:
            successors[source].append(target)

    cycles = []
    for component in _strongly_connected(order, successors):
        members = set(component)
        start = min(component, key=order.__getitem__)
        if len(component) == 1 and start not in successors[start]:
            continue
        cycles.append(_cycle_through(start, members, successors))
    cycles.sort(key=lambda cycle: order[cycle[0]])
    return cycles


def _strongly_connected(
    order: Mapping[str, int], successors: Mapping[str, list[str]]
) -> list[list[str]]:
    """Tarjan's algorithm, iterative so deep graphs cannot hit the recursion limit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in order:
        if root in index:
            continue
        work = [(root, iter(successors[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(successors[child])))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(component)
    return components


def _cycle_through(start: str, members: set[str], successors: Mapping[str, list[str]]) -> list[str]:
    """Return one simple cycle from ``start`` that stays inside ``members`` (BFS)."""
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        next_frontier = []
        for node in frontier:
            for child in successors[node]:
                if child not in members:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return path[::-1]
                if child not in parents:
                    parents[child] = node
                    next_frontier.append(child)
        frontier = next_frontier
    return [start]  # unreachable for a real strongly connected component
