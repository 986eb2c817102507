"""A running pipeline: one Trio nursery, one task per node, bounded channels between them.

Data path::

    send() ──▶ [inbox of target node(s)] ──▶ node task ──▶ [inbox of each successor] ...
                                              sink task ──▶ [results] ──▶ receive()

Every channel is a bounded ``trio`` memory channel, so a slow node or a caller that
stops reading results stops the producers upstream of it (backpressure) and nothing
is queued without a bound. Edge items are ``(sequence, data, size, queued)`` tuples:
the sequence of the input that triggered them, so results can be matched to inputs,
the bytes the item holds in the session's byte budget (computed once, by its sender),
and when it was queued (for the node's queue wait).

Rules the implementation keeps:

1. Per-edge order is preserved: one task per node, FIFO channels.
2. A node sees end of input once every producer of its inbox (its predecessors and,
   for client input, the session itself) has closed; it then flushes and closes its
   own outputs, so end of input cascades through the graph in order.
3. A node task drains everything already waiting in its inbox before it waits, and
   sends without yielding while there is room: scheduling is amortised over bursts.
4. A failing node ends the session: the caller gets one :class:`NodeError` naming
   the node (and the input's sequence), never an exception group.
5. Every node's ``cleanup()`` runs exactly once, bounded in time, whatever happens.

This module holds the session handle and its assembly (:func:`open_session` wires the
channels and starts the tasks). What it stands on lives beside it, one concept a
module: making the nodes and choosing where each runs
(:mod:`~remotemedia.session.building`), initialising and cleaning them up
(:mod:`~remotemedia.session.lifecycle`), each node's task, the hot loop
(:mod:`~remotemedia.session.node_task`), and what a session reports
(:mod:`~remotemedia.session.results`, re-exported here).
"""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import trio

from remotemedia.config import DEFAULT_SESSION_BUFFER_BYTES
from remotemedia.errors import (
    NodeError,
    PipelineClosedError,
    RemoteMediaError,
    UnknownNodeError,
    leaf_errors,
)
from remotemedia.executors.process import WorkerSettings, new_session_id
from remotemedia.executors.registry import ExecutorRegistry
from remotemedia.executors.reports import WorkerCall
from remotemedia.media import Audio, RuntimeData, payload_size
from remotemedia.nodes import ANY, Node, NodeRegistry
from remotemedia.observability.turns import (
    NodeRole,
    TurnObserver,
    TurnTracker,
    Watch,
    roles_watched,
)
from remotemedia.session.budget import ByteBudget
from remotemedia.session.building import NodeBuilder, build_nodes
from remotemedia.session.graph import Graph
from remotemedia.session.lifecycle import CLEANUP_TIMEOUT as CLEANUP_TIMEOUT
from remotemedia.session.lifecycle import StatusCallback, cleanup_all, initialize_all
from remotemedia.session.node_task import Item, NodeTask, NodeTimer, Sized, WatchedNodeTask
from remotemedia.session.results import NodeStats, Result

__all__ = ["NodeSeam", "NodeStats", "Result", "Session", "StatusCallback", "open_session"]

DEFAULT_EDGE_CAPACITY = 32
"""Items an edge buffers before its producer waits."""

NodeSeam: TypeAlias = Callable[[Node[Any]], Node[Any]]
"""Wraps each node of a manifest once built (a fault kit's seam): what the session runs."""


class Session:
    """A running pipeline; created by :func:`open_session`.

    Send inputs with :meth:`send`, end input with :meth:`send_eof`, and read
    results with :meth:`receive` or ``async for result in session``. Results must be
    read while sending: a pipeline whose results are not read stops accepting input
    once its buffers are full.
    """

    def __init__(
        self,
        graph: Graph,
        inboxes: dict[str, trio.MemorySendChannel[Item]],
        results: trio.MemoryReceiveChannel[Sized],
        stats: dict[str, NodeStats],
        budget: ByteBudget,
        turns: TurnTracker | None = None,
        clock: Callable[[], float] = time.perf_counter,
        nodes: Mapping[str, Node[Any]] | None = None,
        stamp: Callable[[], float] | None = None,
    ) -> None:
        self.graph = graph
        self.nodes: Mapping[str, Node[Any]] = nodes or {}
        """The running nodes, by node id (read, do not call: their tasks own them)."""
        self._clock = clock
        self._stamp = stamp
        self.turns = turns
        """The session's turn tracker, if it has one (``open_session(turns=...)``)."""
        self._inboxes = inboxes
        self._results = results
        self._stats = stats
        self._budget = budget
        self._next_sequence = 0
        self._eof = False
        self._sources = graph.sources

    def discard_results(self) -> None:
        """Drop the results nobody read: the session is over (its block was left)."""
        self._results.close()

    def queue_depths(self) -> list[tuple[str, int]]:
        """Items waiting in each node's input, as (node_type, count) pairs."""
        return [
            (self.graph.nodes[node_id].node_type, inbox.statistics().current_buffer_used)
            for node_id, inbox in self._inboxes.items()
        ]

    def queue_depth(self, node_id: str) -> int:
        """Items waiting in one node's input."""
        return self._inboxes[node_id].statistics().current_buffer_used

    def working(self) -> list[tuple[int, str]]:
        """The nodes at work now, as (sequence of their input, node_id), oldest input first.

        A node is at work unless it waits for input or has finished. Of two nodes on
        the same input the one further downstream comes first: the other may only be
        waiting for it to take its output. (Worked out when asked, so that the
        per-input path only notes the sequence it took.)
        """
        busy = []
        order = {node_id: index for index, node_id in enumerate(self.graph.nodes)}
        for node_id, stats in self._stats.items():
            waiting = self._inboxes[node_id].statistics().tasks_waiting_receive
            if stats.current is not None and not waiting:
                busy.append((stats.current, -order[node_id], node_id))
        return [(sequence, node_id) for sequence, _, node_id in sorted(busy)]

    @property
    def stats(self) -> dict[str, NodeStats]:
        """Per-node counters, by node id (live objects; read, do not modify)."""
        return self._stats

    async def send(
        self, data: RuntimeData, *, node_id: str | None = None, sequence: int | None = None
    ) -> int:
        """Send one input into the pipeline, waiting while the pipeline is full.

        Args:
            data: The input value.
            node_id: The node to deliver it to; by default every source node.
            sequence: The input's sequence number; by default one more than the last.

        Returns:
            The sequence number the input was given.

        Raises:
            UnknownNodeError: ``node_id`` is not a node of this pipeline.
            PipelineClosedError: Input was already ended with :meth:`send_eof`.

        Like every call here, this is a cancellation point; it yields to other tasks
        only when it has to wait, which keeps bursts of small inputs cheap.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._eof:
            raise PipelineClosedError("Cannot send: input to this pipeline was already ended.")
        targets = self._sources if node_id is None else (node_id,)
        if node_id is not None and node_id not in self._inboxes:
            known = ", ".join(self._inboxes)
            raise UnknownNodeError(
                f"No node '{node_id}' in pipeline '{self.graph.name}'; its nodes are: {known}."
            )
        if sequence is None:
            sequence = self._next_sequence
        self._next_sequence = sequence + 1
        size = payload_size(data)
        stamp = self._stamp
        item = (sequence, data, size, stamp() if stamp is not None else 0.0)
        if self.turns is not None and type(data) is Audio:
            self.turns.audio_in(self._clock(), data.duration)
        budget = self._budget
        for target in targets:
            inbox = self._inboxes[target]
            waited = not budget.try_take(size, inbox)
            try:
                if waited:
                    await budget.take(size, inbox)
                try:
                    inbox.send_nowait(item)
                except trio.WouldBlock:
                    waited = True
                    await inbox.send(item)
            except trio.BrokenResourceError:
                budget.give_back(size)
                raise PipelineClosedError(
                    f"Cannot send: node '{target}' has already finished."
                ) from None
            except trio.ClosedResourceError:
                budget.give_back(size)
                # After waiting, send_eof() ran while this input waited for room.
                when = "was ended while this input waited" if waited else "was already ended"
                raise PipelineClosedError(f"Cannot send: input to this pipeline {when}.") from None
            except BaseException:
                budget.give_back(size)
                raise
        return sequence

    async def send_eof(self) -> None:
        """End the input: nodes flush what they buffer, then results end. Idempotent."""
        self._eof = True
        # Close every inbox before the (single) checkpoint, so that a cancellation
        # arriving here cannot leave some nodes waiting for input forever.
        for inbox in self._inboxes.values():
            inbox.close()
        await trio.lowlevel.checkpoint()

    async def receive(self) -> Result:
        """Return the next result, waiting for one if none is ready.

        Raises:
            trio.EndOfChannel: Input was ended and every result has been received.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            # Taking a ready result without yielding keeps bursts cheap; the caller
            # still yields whenever it has to wait.
            result, size = self._results.receive_nowait()
        except trio.WouldBlock:
            self._budget.receiver_waiting()
            result, size = await self._results.receive()
        self._budget.give_back(size)
        return result

    def __aiter__(self) -> Session:
        return self

    async def __anext__(self) -> Result:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


@asynccontextmanager
async def open_session(
    graph: Graph,
    registry: NodeRegistry,
    *,
    edge_capacity: int = DEFAULT_EDGE_CAPACITY,
    init_timeout: float | None = None,
    on_status: StatusCallback | None = None,
    time_nodes: Callable[[str], NodeTimer] | None = None,
    count: Callable[[str, str, int], None] | None = None,
    executors: ExecutorRegistry | None = None,
    workers: WorkerSettings | None = None,
    budget: ByteBudget | None = None,
    node_seam: NodeSeam | None = None,
    turns: TurnObserver | None = None,
    clock: Callable[[], float] = time.perf_counter,
    worker_calls: Callable[[WorkerCall], None] | None = None,
) -> AsyncIterator[Session]:
    """Start a pipeline: build and initialise its nodes, then run one task per node.

    Leaving the block stops the pipeline: every node task is cancelled and every
    node's ``cleanup()`` runs. To get every result, call :meth:`Session.send_eof`
    and read results until they end before leaving the block.

    Args:
        graph: The compiled pipeline.
        registry: Where the node types come from.
        edge_capacity: Items each edge (and the results channel) buffers.
        init_timeout: Seconds all nodes together may take to initialise.
        on_status: Awaited with ``(node_id, status, message)`` as each node starts
            and finishes initialising (``status`` is ``initializing``, ``ready`` or
            ``error``), for progress reports such as the protocol's ``_status``.
        time_nodes: Called once per node with its node type; what it returns is
            given every input the node processes: (seconds it waited in the node's
            inbox, seconds the node took), for metrics.
        count: Called with ``(node_type, event, amount)`` for each
            :meth:`~remotemedia.nodes.Node.count` of a node, for metrics.
        executors: Decides which nodes run in worker processes; default: all
            in-process (a node's ``executor: process`` in the manifest still wins).
        workers: Shared-memory namespace and stop timing for worker processes.
        budget: Bytes the session's channels may hold queued, shared with whatever
            else the caller counts against it (a server counts the call's request
            and response queues); default: a budget of its own of 32 MiB.
        node_seam: Wraps each node of the manifest once built (not the children nodes
            make); a fault-injection kit's seam. Default: the nodes as built.
        turns: Told of each turn of the session as it ends, with its latency by stage
            (:mod:`remotemedia.observability.turns`); the session's turn tracker
            watches only the nodes whose outputs speak about turns. Default: no
            tracking.
        clock: What node times and queue waits are read from: a fast clock of
            seconds. Tests on Trio's mock clock pass ``trio.current_time``.
        worker_calls: Given each input's trip through a worker process (a
            :class:`~remotemedia.executors.process.WorkerCall`), for metrics and traces.

    Raises:
        NodeError: A node failed to initialise (or did not within ``init_timeout``)
            or failed to process an input; raised alone, not inside an exception group.
    """
    builder = NodeBuilder(
        executors or ExecutorRegistry(), workers, new_session_id(), count, worker_calls
    )
    nodes = build_nodes(graph, registry, builder)
    if node_seam is not None:
        nodes = {node_id: node_seam(node) for node_id, node in nodes.items()}
    stats = {node_id: NodeStats() for node_id in graph.nodes}
    tracker, roles = _tracker(graph, registry, turns)
    session: Session | None = None
    try:
        await initialize_all(nodes, init_timeout, on_status)
        async with trio.open_nursery() as nursery:
            budget = budget or ByteBudget(DEFAULT_SESSION_BUFFER_BYTES)
            watches = {
                node_id: functools.partial(tracker.output, role)
                for node_id, role in roles.items()
                if tracker is not None
            }
            session = _wire(
                graph, nodes, stats, nursery, edge_capacity, time_nodes, budget, watches, clock
            )
            session.turns = tracker
            yield session
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Keep the primary error's own cause (the node's exception); hide the group.
        primary = _collapse(group)
        primary.__suppress_context__ = True
        try:
            raise primary
        finally:
            # Raising it here makes the group its context, and the group holds it: a
            # cycle that would keep every frame of the session alive (with the data
            # in them) until a full collection. The context is suppressed anyway.
            primary.__context__ = None
            del primary
    finally:
        if session is not None:
            session.discard_results()  # what nobody will read goes now
        if tracker is not None:
            tracker.finish(clock())
        await cleanup_all(nodes.values())


def _tracker(
    graph: Graph, registry: NodeRegistry, observer: TurnObserver | None
) -> tuple[TurnTracker | None, dict[str, NodeRole]]:
    """The session's turn tracker and the nodes it watches (none without an observer)."""
    if observer is None:
        return None, {}
    declared = {}
    for node_id, spec in graph.nodes.items():
        cls = registry.get(spec.node_type)
        declared[node_id] = (spec.node_type, cls.accepts, cls.produces)
    roles, replies = roles_watched(declared, ANY)
    return TurnTracker(observer, replies=replies), roles


def _wire(
    graph: Graph,
    nodes: dict[str, Node[Any]],
    stats: dict[str, NodeStats],
    nursery: trio.Nursery,
    capacity: int,
    time_nodes: Callable[[str], NodeTimer] | None,
    budget: ByteBudget,
    watches: Mapping[str, Watch],
    clock: Callable[[], float],
) -> Session:
    """Create the channels, start one task per node, and return the session handle."""
    inbox_send: dict[str, trio.MemorySendChannel[Item]] = {}
    inbox_receive: dict[str, trio.MemoryReceiveChannel[Item]] = {}
    for node_id in graph.nodes:
        inbox_send[node_id], inbox_receive[node_id] = trio.open_memory_channel(capacity)
    results_send, results_receive = trio.open_memory_channel[Sized](capacity)
    for node_id, spec in graph.nodes.items():
        outboxes: list[trio.MemorySendChannel[Any]]
        outboxes = [inbox_send[target].clone() for target in spec.successors]
        results = results_send.clone() if spec.is_sink else None
        if results is not None:
            outboxes.append(results)
        fields: dict[str, Any] = {
            "node": nodes[node_id],
            "inbox": inbox_receive[node_id],
            "outboxes": outboxes,
            "results": results,
            "sink_id": node_id,
            "stats": stats[node_id],
            "failures": results_send.clone(),
            "budget": budget,
            "observe": time_nodes(spec.node_type) if time_nodes else None,
            "clock": clock,
            "stamp": clock if time_nodes is not None else None,
        }
        watch = watches.get(node_id)
        task = NodeTask(**fields) if watch is None else WatchedNodeTask(**fields, watch=watch)
        nursery.start_soon(task.run, name=f"node:{node_id}")
    # The originals stay with the session for client input; each node also holds
    # clones from its predecessors, so an inbox ends when all of them are closed.
    results_send.close()
    stamp = clock if time_nodes is not None else None
    return Session(
        graph, inbox_send, results_receive, stats, budget, clock=clock, nodes=nodes, stamp=stamp
    )


def _collapse(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """Pick the one error to show the caller from a nursery's exception group.

    Cancellation and the secondary failures it causes are dropped; a NodeError
    (the root cause) wins over errors that are consequences of it. A group holding
    nothing but cancellation becomes one bare ``trio.Cancelled``, which the
    cancelled scope catches as usual.
    """
    leaves = list(leaf_errors(group))
    errors = [e for e in leaves if not isinstance(e, trio.Cancelled)]
    for preferred in (NodeError, RemoteMediaError, Exception):
        for error in errors:
            if isinstance(error, preferred):
                return error
    return errors[0] if errors else leaves[0]
