"""Sessions: compiling a manifest into a graph and running it as a Trio nursery."""

from remotemedia.session.graph import Graph, GraphNode, compile_graph
from remotemedia.session.session import NodeStats, Result, Session, open_session

__all__ = ["Graph", "GraphNode", "NodeStats", "Result", "Session", "compile_graph", "open_session"]
