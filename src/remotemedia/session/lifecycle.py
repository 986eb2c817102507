"""Bringing a session's nodes up and down: ``initialize()`` before, ``cleanup()`` after.

Both run every node concurrently under one deadline, so that one slow node
cannot hold up the others nor the session for longer than its caller allows:

1. Initialisation reports each node's progress (``initializing``, ``ready``,
   ``error``) and turns any failure, or the deadline passing, into one
   :class:`~remotemedia.errors.NodeError` that names the node (and, at the deadline,
   every node still initialising and why).
2. Cleanup runs each node's ``cleanup()`` exactly once, shielded from cancellation
   and bounded by :data:`CLEANUP_TIMEOUT`; a cleanup that fails is logged, never raised.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeAlias

import trio

from remotemedia.errors import NodeError, RemoteMediaError
from remotemedia.nodes import Node

__all__ = ["CLEANUP_TIMEOUT", "StatusCallback", "cleanup_all", "initialize_all"]

logger = logging.getLogger(__name__)

CLEANUP_TIMEOUT = 5.0
"""Seconds the nodes' cleanup() calls (run concurrently) may take before being abandoned."""

StatusCallback: TypeAlias = Callable[[str, str, str], Awaitable[None]]
"""Awaited with (node_id, status, message) while nodes initialise."""


async def initialize_all(
    nodes: dict[str, Node[Any]], timeout: float | None, on_status: StatusCallback | None
) -> None:
    """Initialise every node concurrently, reporting progress, within the timeout."""
    pending = set(nodes)

    async def report(node_id: str, status: str, message: str) -> None:
        if on_status is not None:
            await on_status(node_id, status, message)

    async def initialize(node: Node[Any]) -> None:
        await report(node.node_id, "initializing", f"Initializing {node.node_type}")
        node.progress = functools.partial(report, node.node_id, "initializing")
        try:
            await node.initialize()
        except NodeError as exc:
            await report(node.node_id, "error", exc.reason)
            raise
        except RemoteMediaError as exc:
            await report(node.node_id, "error", exc.message)
            raise NodeError(node.node_id, node.node_type, exc.message) from exc
        except Exception as exc:
            await report(node.node_id, "error", str(exc))
            raise NodeError(node.node_id, node.node_type, f"could not initialise: {exc}") from exc
        pending.discard(node.node_id)
        await report(node.node_id, "ready", f"{node.node_type} ready")

    with trio.move_on_after(math.inf if timeout is None else timeout) as deadline:
        async with trio.open_nursery() as nursery:
            for node in nodes.values():
                nursery.start_soon(initialize, node)
    if deadline.cancelled_caught:
        raise _too_slow(nodes, sorted(pending), timeout)


def _too_slow(nodes: dict[str, Node[Any]], slow: list[str], timeout: float | None) -> NodeError:
    """The error for nodes ``slow`` still initialising at the deadline (the first is named)."""
    first = nodes[slow[0]]
    building = [n for n in slow if getattr(nodes[n], "building_environment", False)]
    hint = (
        f"; {', '.join(building)} still wait for their Python environment to be built, "
        "which goes on: build it ahead (`remotemedia envs build` or `serve "
        "--prepare-envs`) or allow more --init-timeout"
        if building
        else ""
    )
    return NodeError(
        first.node_id,
        first.node_type,
        f"did not finish initialising within {timeout:g} s "
        f"(still initialising: {', '.join(slow)}){hint}",
    )


async def cleanup_all(nodes: Iterable[Node[Any]]) -> None:
    """Run every node's cleanup() concurrently, shielded, under one deadline.

    Concurrent so that one slow or hung cleanup cannot keep the others from running.
    """

    async def cleanup(node: Node[Any]) -> None:
        try:
            await node.cleanup()
        except Exception:
            logger.exception("Cleanup of node '%s' (%s) failed.", node.node_id, node.node_type)

    with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT) as scope:
        async with trio.open_nursery() as nursery:
            for node in nodes:
                nursery.start_soon(cleanup, node)
    if scope.cancelled_caught:
        logger.warning("Node cleanup exceeded %.1f s and was abandoned.", CLEANUP_TIMEOUT)
