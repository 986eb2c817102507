"""What ``remotemedia top`` shows: a server's live sessions, as one JSON document.

Served at ``/v1/sessions`` on the metrics port (``--metrics-port``): the same place,
and the same trust, as ``/metrics``. It names sessions and pipelines, never what was
said (a turn carries its length in characters, not its text).

The document::

    {"server": "host/pid", "draining": false, "sessions": [
      {"id", "pipeline", "edge", "age_s", "chunks", "results", "lost",
       "nodes": [{"id", "type", "queue", "inputs", "busy_s",
                  "worker": {"pid", "state", "restarts"} | null}],
       "turns": [{"turn", "outcome", "speculation", "stages", "latency"}]}]}

``turns`` lists the session's last finished turns and any still open, oldest first,
with the fields of the turn log lines (seconds, the metrics' stage names).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from remotemedia.executors.process import ProcessNode
from remotemedia.observability import Turn
from remotemedia.service.turns import TurnReporter, turn_fields
from remotemedia.session import Session

__all__ = ["SessionView", "session_view", "snapshot"]

SessionView = Callable[[], dict[str, Any]]
"""A live session's view: called when ``/v1/sessions`` is asked for."""


def _node(session: Session, node_id: str) -> dict[str, Any]:
    stats = session.stats[node_id]
    node = session.nodes.get(node_id)
    worker = None
    if isinstance(node, ProcessNode):
        worker = {"pid": node.pid, "state": node.worker_state, "restarts": node.restarts}
    return {
        "id": node_id,
        "type": session.graph.nodes[node_id].node_type,
        "queue": session.queue_depth(node_id),
        "inputs": stats.inputs,
        "busy_s": round(stats.busy, 6),
        "worker": worker,
    }


def session_view(
    *,
    session_id: str,
    edge: str,
    age_s: float,
    chunks: int,
    results: int,
    lost: int,
    session: Session | None,
    turns: TurnReporter | None,
) -> dict[str, Any]:
    """One live session's part of the document."""
    shown: list[Turn] = list(turns.recent) if turns is not None else []
    if session is not None and session.turns is not None:
        shown += session.turns.open_turns
    return {
        "id": session_id,
        "pipeline": turns.pipeline if turns is not None else "",
        "edge": edge,
        "age_s": round(age_s, 3),
        "chunks": chunks,
        "results": results,
        "lost": lost,
        "nodes": [_node(session, node_id) for node_id in session.graph.nodes] if session else [],
        "turns": [turn_fields(turn) for turn in shown],
    }


def snapshot(server: str, draining: bool, views: dict[str, SessionView]) -> dict[str, Any]:
    """The whole document: the server, whether it drains, every live session's view."""
    return {
        "server": server,
        "draining": draining,
        "sessions": [view() for view in list(views.values())],
    }
