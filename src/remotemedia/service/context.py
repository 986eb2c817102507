"""What every RPC handler shares, and turning a client's manifest into a runnable graph."""

from __future__ import annotations

import attrs

from remotemedia.config import Limits
from remotemedia.errors import ManifestError, Problem, ResourceLimitError
from remotemedia.executors.process import WorkerSettings
from remotemedia.executors.registry import ExecutorRegistry
from remotemedia.manifest import manifest_from_dict
from remotemedia.nodes import NodeRegistry
from remotemedia.params import server_path_params
from remotemedia.service.convert import manifest_document
from remotemedia.service.metrics import ServerMetrics
from remotemedia.session import Graph, Session, compile_graph
from remotemedia.session.manager import SessionManager
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import execution_pb2 as epb

__all__ = ["ServiceContext"]


@attrs.define
class ServiceContext:
    """What every RPC handler shares: node types, limits, live sessions, metrics.

    Attributes:
        registry: The node types clients may use.
        limits: The server's limits (a client can only lower them).
        manager: Admission and drain of streaming sessions.
        metrics: Where counters and histograms go.
        sessions: Live sessions by id, for metrics that look inside them.
        allow_client_paths: Accept params that name files on the server.
        executors: Which node types run in worker processes.
        workers: How worker processes are run; None: the defaults.
    """

    registry: NodeRegistry
    limits: Limits
    manager: SessionManager
    metrics: ServerMetrics
    sessions: dict[str, Session] = attrs.field(factory=dict)
    allow_client_paths: bool = False
    executors: ExecutorRegistry = attrs.field(factory=ExecutorRegistry.with_defaults)
    workers: WorkerSettings | None = None

    def limits_for(self, requested: pb.ResourceLimits) -> Limits:
        """The server's limits, lowered (never raised) by a request's ResourceLimits."""
        return self.limits.lowered(
            max_memory_bytes=requested.max_memory_bytes,
            max_timeout_ms=requested.max_timeout_ms,
            max_audio_samples=requested.max_audio_samples,
        )

    def compile(self, manifest: epb.PipelineManifest, limits: Limits) -> Graph:
        """Validate a client's manifest against the server's node types and limits.

        Raises:
            ManifestError: Every problem, with its path (including params that name
                server files, unless the server allows them).
            ResourceLimitError: More nodes than the limit.
        """
        document = manifest_document(manifest)
        if len(document["nodes"]) > limits.max_nodes:
            raise ResourceLimitError(
                f"The manifest has {len(document['nodes'])} nodes; this server allows at most "
                f"{limits.max_nodes}."
            )
        graph = compile_graph(manifest_from_dict(document, catalog=self.registry), self.registry)
        if not self.allow_client_paths:
            problems = [
                Problem(
                    f"$.nodes[{index}].params.{name}",
                    "names a file on the server, which clients may not choose; leave it unset "
                    "or start the server with --allow-client-paths.",
                )
                for index, node in enumerate(graph.nodes.values())
                for name in server_path_params(node.params)
            ]
            if problems:
                raise ManifestError(problems)
        return graph
