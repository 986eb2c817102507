"""Making a session's nodes: each node of the manifest, and the children nodes make.

Where a node runs is decided here, once for every node a session has: in the server
process, or in a worker process (a :class:`~remotemedia.executors.process.ProcessNode`
standing in for it). The executor registry decides by node type, a manifest's
``executor`` overrides it, a node with a Python environment of its own always gets a
worker, and a duplex node never does.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from remotemedia.environments import node_environment
from remotemedia.errors import NodeError
from remotemedia.executors.process import ProcessNode, WorkerSettings, default_namespace
from remotemedia.executors.registry import Executor, ExecutorRegistry
from remotemedia.executors.reports import WorkerCall
from remotemedia.nodes import Node, NodeRegistry
from remotemedia.session.graph import Graph

__all__ = ["NodeBuilder", "build_nodes"]


def build_nodes(graph: Graph, registry: NodeRegistry, builder: NodeBuilder) -> dict[str, Node[Any]]:
    """Build every node of ``graph``, by node id.

    Raises:
        NodeError: A node could not be created (its reason says why).
    """
    nodes: dict[str, Node[Any]] = {}
    for spec in graph.nodes.values():
        cls = registry.get(spec.node_type)
        override = Executor(spec.executor) if spec.executor else None
        try:
            nodes[spec.id] = builder.build(
                spec.id, cls, spec.params, override, spec.python, spec.python_deps
            )
        except Exception as exc:
            raise NodeError(spec.id, spec.node_type, f"could not be created: {exc}") from exc
    return nodes


@attrs.define
class NodeBuilder:
    """Builds a session's nodes, those of the manifest and their children alike.

    One place decides where a node runs, so a child a node makes (its voice, say)
    runs where the same node type would run in the manifest: a model node gets a
    worker process of its own, supervised by the same settings (restarts, memory
    budget), and its counts reach the same metrics.
    """

    executors: ExecutorRegistry
    workers: WorkerSettings | None  # None: a namespace of this process, made when needed
    session_id: str
    count: Callable[[str, str, int], None] | None
    calls: Callable[[WorkerCall], None] | None = None

    def build(
        self,
        node_id: str,
        cls: type[Node[Any]],
        params: Any,
        override: Executor | None = None,
        python: str | None = None,
        python_deps: Sequence[str] = (),
    ) -> Node[Any]:
        """Build a node of ``cls`` where the executor registry (or ``override``) says.

        A node with a Python environment of its own (its type's, the server's node
        config, or the manifest's ``python``/``python_deps``) runs in a worker process.
        """
        configured = self.workers.node_environments if self.workers is not None else {}
        environment = node_environment(
            cls.environment, configured.get(cls.node_type), python, python_deps
        )
        executor = _executor_of(cls, self.executors.executor_for(cls.node_type, override), override)
        if environment is not None:
            if override is Executor.INPROCESS:
                raise ValueError(
                    f"it needs a Python environment of its own ({environment.describe()}), "
                    "so it runs in a worker process: remove its 'executor: inprocess'"
                )
            executor = Executor.PROCESS
        node: Node[Any]
        if executor is Executor.PROCESS:
            node = ProcessNode(
                node_id,
                params,
                node_class=cls,
                raw_params=attrs.asdict(params),
                session_id=self.session_id,
                settings=self._worker_settings(),
                environment=environment,
            )
            node.on_call = self.calls
        else:
            node = cls(node_id, params)
        if self.count is not None:
            node.on_count = functools.partial(self.count, node.node_type)
        node.child_factory = self.build_child
        return node

    def build_child(self, node_id: str, cls: type[Node[Any]], params: Any) -> Node[Any]:
        """A node's :attr:`~remotemedia.nodes.Node.child_factory`."""
        return self.build(node_id, cls, params)

    def _worker_settings(self) -> WorkerSettings:
        if self.workers is None:
            self.workers = WorkerSettings(default_namespace())
        return self.workers


def _executor_of(cls: type[Node[Any]], executor: Executor, override: Executor | None) -> Executor:
    """Where a node of ``cls`` runs: a duplex node, only in the server process."""
    if not cls.is_duplex():
        return executor
    if override is Executor.PROCESS:
        raise ValueError(
            "it runs tasks of its own (a duplex node), so only in the server process: "
            "remove its 'executor: process'"
        )
    return Executor.INPROCESS
