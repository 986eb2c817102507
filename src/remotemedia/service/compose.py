"""The composition root: one server's service, built from its configuration.

Every edge (the gRPC transports, the WebSocket, the fault kit) calls the service
this builds; none builds its own. What goes in: the node registry, the executor
choice, how workers run (shared memory, timeouts, Python environments), admission
and metrics, and the fault seams (:mod:`remotemedia.service.seams`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from remotemedia.config import ConfigError, NodeDefaults, ServerConfig
from remotemedia.environments import Environment
from remotemedia.environments.cache import Environments, default_env_dir
from remotemedia.errors import NodeEnvironmentError
from remotemedia.executors.process import (
    WorkerSettings,
    default_namespace,
    remove_dead_namespaces,
)
from remotemedia.executors.registry import Executor, ExecutorRegistry
from remotemedia.nodes import NodeRegistry, default_registry
from remotemedia.observability.tracing import Tracing
from remotemedia.service.context import ServiceContext
from remotemedia.service.metrics import ServerMetrics
from remotemedia.service.seams import NO_SEAMS, Seams
from remotemedia.session.manager import SessionManager

__all__ = ["build_service", "environments", "node_environments"]

logger = logging.getLogger(__name__)


def build_service(
    config: ServerConfig,
    registry: NodeRegistry | None = None,
    seams: Seams = NO_SEAMS,
    tracing: Tracing | None = None,
) -> ServiceContext:
    """The service every edge of a server calls, after clearing dead workers' leftovers.

    Workers of an earlier server that was killed may have left shared memory behind;
    it is removed here, before this server's workers create their own.

    Args:
        config: The server's configuration.
        registry: The node types clients may use; default: the installed ones.
        seams: Where a fault-injection kit wraps the runtime's objects; default: nowhere.
        tracing: Where sessions' traces go; default: none.
    """
    removed = remove_dead_namespaces()
    if removed:
        logger.info("Removed %d shared-memory files left by dead remotemedia processes.", removed)
    manager = SessionManager(config.limits.max_sessions)
    sessions: dict[str, Any] = {}

    def edge_depths() -> list[tuple[tuple[str, ...], float]]:
        depths: dict[str, float] = {}
        for session in sessions.values():
            for node_type, depth in session.queue_depths():
                depths[node_type] = depths.get(node_type, 0.0) + depth
        return [((node_type,), depth) for node_type, depth in depths.items()]

    registry = registry or default_registry()
    executors = ExecutorRegistry.with_defaults()
    executors.explicit.update({name: Executor(where) for name, where in config.executors.items()})
    return ServiceContext(
        registry=registry,
        limits=config.limits,
        manager=manager,
        metrics=ServerMetrics(
            active_sessions=lambda: manager.count,
            edge_depths=edge_depths,
            draining=lambda: manager.draining,
        ),
        sessions=sessions,
        allow_client_paths=config.allow_client_paths,
        executors=executors,
        workers=WorkerSettings(
            default_namespace(),
            stop_grace=config.workers.stop_grace,
            call_timeout=config.workers.call_timeout,
            start_timeout=config.workers.start_timeout,
            max_rss_mb=config.workers.max_rss_mb,
            environments=environments(config),
            node_environments=node_environments(config.node_config, registry),
            link_seam=seams.link,
            on_event=seams.on_event,
        ),
        seams=seams,
        tracing=tracing,
        node_params={name: entry.params for name, entry in config.node_config.items()},
    )


def environments(config: ServerConfig) -> Environments:
    """The server's environment cache (``--env-dir``, ``--env-installer``)."""
    root = Path(config.env_dir) if config.env_dir else default_env_dir()
    return Environments(root, installer=config.env_installer)


def node_environments(
    node_config: Mapping[str, NodeDefaults], registry: NodeRegistry
) -> dict[str, Environment]:
    """The environments the operator set per node type, completed from the declared ones.

    A node config that gives only ``python`` keeps the node type's requirements, and
    one that gives only ``requirements`` keeps its Python.

    Raises:
        ConfigError: A node type that does not exist, or a bad python or requirement.
    """
    found = {}
    for node_type, entry in node_config.items():
        if node_type not in registry:
            raise ConfigError(
                f"--node-config names the node type {node_type!r}, which this server does "
                "not have; `remotemedia nodes` lists them."
            )
        if entry.python is None and entry.requirements is None:
            continue
        declared = registry.get(node_type).environment or Environment()
        try:
            found[node_type] = Environment(
                entry.python if entry.python is not None else declared.python,
                entry.requirements if entry.requirements is not None else declared.requirements,
            )
        except NodeEnvironmentError as exc:
            raise ConfigError(f"--node-config {node_type}: {exc.message}") from None
    return found
