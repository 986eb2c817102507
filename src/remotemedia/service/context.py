"""What every RPC handler shares, and turning a client's manifest into a runnable graph."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from remotemedia.config import Limits
from remotemedia.errors import InvalidRequestError, ManifestError, Problem, ResourceLimitError
from remotemedia.executors.process import WorkerSettings
from remotemedia.executors.registry import ExecutorRegistry
from remotemedia.log_throttle import LogThrottle
from remotemedia.manifest import ParamWarning, checked_manifest_from_dict
from remotemedia.nodes import NodeRegistry
from remotemedia.observability.tracing import Tracing
from remotemedia.params import restricted_params
from remotemedia.service.convert import manifest_document
from remotemedia.service.identity import default_server_id
from remotemedia.service.metrics import ServerMetrics
from remotemedia.service.seams import NO_SEAMS, Seams
from remotemedia.session import Graph, Session, compile_graph
from remotemedia.session.manager import SessionManager
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import execution_pb2 as epb

__all__ = ["MIN_MEMORY_LIMIT_BYTES", "ServiceContext"]

logger = logging.getLogger(__name__)

INSTALL_PARAMS = frozenset({"__python_deps__", "__python_extra_deps__"})
"""Params the original runtime read as packages to install for a node."""

COMPILED_CACHE = 64
"""Distinct valid manifests whose compiled graphs a server keeps (least recently used go)."""

MIN_MEMORY_LIMIT_BYTES = 1024
"""Smallest ``ResourceLimits.max_memory_bytes`` (besides 0, "not set") a client may ask
for: it bounds the size of each message, and a smaller bound could not carry any chunk.
The other ResourceLimits fields take any value: 0 means "not set", and a value above
the server's own limit is simply capped to it."""


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
        server_id: Which server process this is (``<host>/<pid>``). Every response
            carries it in a header (:data:`~remotemedia.service.identity.SERVER_HEADER`),
            so a client behind a load balancer can tell the replicas apart.
        log: The server's lines that clients cause (the service's and its edges'),
            each kind at a bounded rate: a client decides how often they happen.
        node_params: The operator's param defaults per node type (``--node-config``),
            under a client's own values.
        seams: Where a fault-injection kit wraps the runtime's objects (the workers'
            links are wrapped through ``workers``); default: nowhere.
        tracing: Where sessions' traces go (OpenTelemetry); None: not traced.
        views: Each live session's view for ``remotemedia top``, by session id.
    """

    registry: NodeRegistry
    limits: Limits
    manager: SessionManager
    metrics: ServerMetrics
    sessions: dict[str, Session] = attrs.field(factory=dict)
    allow_client_paths: bool = False
    executors: ExecutorRegistry = attrs.field(factory=ExecutorRegistry.with_defaults)
    workers: WorkerSettings | None = None
    server_id: str = attrs.field(factory=default_server_id)
    log: LogThrottle = attrs.field(factory=lambda: LogThrottle(logger))
    node_params: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    seams: Seams = NO_SEAMS
    tracing: Tracing | None = None
    views: dict[str, Callable[[], dict[str, Any]]] = attrs.field(factory=dict)
    _compiled: collections.OrderedDict[
        tuple[bytes, int, bool], tuple[Graph, tuple[ParamWarning, ...]]
    ] = attrs.field(factory=collections.OrderedDict, init=False, repr=False)

    def log_param_warnings(self, warnings: Sequence[ParamWarning], call: str) -> None:
        """Log each ignored param with its node, path and the closest known param.

        Args:
            warnings: From :meth:`compile`.
            call: Which call the manifest came with, to start each line
                (``StreamPipeline session <id>``).
        """
        for warning in warnings:
            self.log.warning(
                "%s: node '%s' has the unknown param '%s' at %s (closest known param: %s); "
                "it is ignored. Start the server with --strict-params to refuse such params.",
                call,
                warning.node_id,
                warning.param,
                warning.path,
                warning.closest or "none is similar",
            )

    def limits_for(self, requested: pb.ResourceLimits, where: str) -> Limits:
        """The server's limits, lowered (never raised) by a request's ResourceLimits.

        Args:
            requested: The request's ResourceLimits.
            where: Its place in the request, for error messages
                (``init.resource_limits``).

        Raises:
            InvalidRequestError: ``max_memory_bytes`` is below
                :data:`MIN_MEMORY_LIMIT_BYTES` (and not 0).
        """
        if 0 < requested.max_memory_bytes < MIN_MEMORY_LIMIT_BYTES:
            raise InvalidRequestError(
                f"{where}.max_memory_bytes is {requested.max_memory_bytes}; it must be 0 "
                f"(not set) or at least {MIN_MEMORY_LIMIT_BYTES}, since it bounds the size of "
                "every message."
            )
        return self.limits.lowered(
            max_memory_bytes=requested.max_memory_bytes,
            max_timeout_ms=requested.max_timeout_ms,
            max_audio_samples=requested.max_audio_samples,
        )

    def compile(
        self, manifest: epb.PipelineManifest, limits: Limits
    ) -> tuple[Graph, list[ParamWarning]]:
        """Validate a client's manifest against the server's node types and limits.

        Params that a node type does not declare are ignored and returned as warnings,
        unless ``limits.strict_params``: then they are problems.

        Returns:
            The graph, and the warnings for the client and the log.

        Raises:
            ManifestError: Every problem, with its path (including params that name
                server files, unless the server allows them).
            ResourceLimitError: More nodes than the limit.
        """
        # Clients send the same few manifests again and again: a valid one is
        # compiled once (graphs and params are immutable, so sharing them is safe).
        key = (
            manifest.SerializeToString(deterministic=True),
            limits.max_nodes,
            limits.strict_params,
        )
        cached = self._compiled.get(key)
        if cached is not None:
            self._compiled.move_to_end(key)
            return cached[0], list(cached[1])
        graph, warnings = self._compile(manifest, limits)
        self._compiled[key] = (graph, tuple(warnings))
        if len(self._compiled) > COMPILED_CACHE:
            self._compiled.popitem(last=False)
        return graph, warnings

    def _compile(
        self, manifest: epb.PipelineManifest, limits: Limits
    ) -> tuple[Graph, list[ParamWarning]]:
        document = manifest_document(manifest)
        if len(document["nodes"]) > limits.max_nodes:
            raise ResourceLimitError(
                f"The manifest has {len(document['nodes'])} nodes; this server allows at most "
                f"{limits.max_nodes}."
            )
        problems = self._client_problems(document["nodes"])
        if problems:
            raise ManifestError(problems)
        for node in document["nodes"]:
            defaults = self.node_params.get(node.get("node_type"))
            if defaults and isinstance(node.get("params"), Mapping):
                node["params"] = {**defaults, **node["params"]}
        # Checked once: loading it against the registry checks it all.
        loaded, checked = checked_manifest_from_dict(
            document, self.registry, strict_params=limits.strict_params
        )
        return compile_graph(loaded, self.registry, checked), list(checked.warnings)

    def _client_problems(self, nodes: Sequence[Mapping[str, Any]]) -> list[Problem]:
        """What a client may not ask for: server files, server-only params, packages."""
        problems = []
        for index, node in enumerate(nodes):
            params = node.get("params")
            if not isinstance(params, Mapping):
                continue  # validation reports it
            for key in params:
                if key in INSTALL_PARAMS:
                    problems.append(
                        Problem(
                            f"$.nodes[{index}].params.{key}",
                            "asks the server to install packages, which no client may; "
                            "the server's operator sets a node type's environment "
                            "(--node-config).",
                        )
                    )
            node_type = node.get("node_type")
            if not isinstance(node_type, str) or node_type not in self.registry:
                continue
            for key, info in restricted_params(self.registry.params_class(node_type), params):
                where = f"$.nodes[{index}].params.{key}"
                if info.server_only:
                    problems.append(
                        Problem(
                            where,
                            "may be set only by the server's operator (--node-config), "
                            "never by a client.",
                        )
                    )
                elif not self.allow_client_paths:
                    problems.append(
                        Problem(
                            where,
                            "names a file on the server, which clients may not choose; "
                            "leave it unset or start the server with --allow-client-paths.",
                        )
                    )
        return problems
