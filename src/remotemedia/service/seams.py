"""Where a fault-injection kit may wrap the runtime's real objects.

The runtime runs the same code with and without faults: a kit does not switch paths
inside it, it hands the composition root (:func:`~remotemedia.service.compose.build_service`)
wrappers around the objects the runtime makes, each wrapper with the methods of what
it wraps, and faults happen inside them. :class:`Seams` lists every such place; the
defaults wrap nothing. :mod:`remotemedia.testing.seams` builds the kit's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs

from remotemedia.executors.link import LinkSeam, same_link
from remotemedia.nodes import Node
from remotemedia.service.wire import Wire

__all__ = ["NO_SEAMS", "Seams"]


def _same_node(node: Node[Any]) -> Node[Any]:
    return node


def _same_wire(wire: Wire) -> Wire:
    return wire


async def _admit() -> None:
    pass


def _ignore(event: str, node_id: str) -> None:
    pass


@attrs.frozen
class Seams:
    """The runtime's fault seams.

    Attributes:
        node: Wraps each node of a session's manifest once built.
        link: Wraps each worker's link (:data:`~remotemedia.executors.link.LinkSeam`).
        wire: Wraps each call's connection to its client, at every edge.
        admission: Awaited before each streaming session is admitted.
        on_event: Called with ``(event, node_id)`` as workers start, fail and circuit
            breakers open (:attr:`~remotemedia.executors.settings.WorkerSettings.on_event`).
    """

    node: Callable[[Node[Any]], Node[Any]] = _same_node
    link: LinkSeam = same_link
    wire: Callable[[Wire], Wire] = _same_wire
    admission: Callable[[], Awaitable[None]] = _admit
    on_event: Callable[[str, str], None] = _ignore


NO_SEAMS = Seams()
"""Wrap nothing: what a server runs with."""
