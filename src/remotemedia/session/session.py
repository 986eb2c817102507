"""A running pipeline: one Trio nursery, one task per node, bounded channels between them.

Data path::

    send() ──▶ [inbox of target node(s)] ──▶ node task ──▶ [inbox of each successor] ...
                                              sink task ──▶ [results] ──▶ receive()

Every channel is a bounded ``trio`` memory channel, so a slow node or a caller that
stops reading results stops the producers upstream of it (backpressure) and nothing
is queued without a bound. Edge items are ``(sequence, data, size)`` tuples: the
sequence of the input that triggered them, so results can be matched to inputs, and
the bytes the item holds in the session's byte budget (computed once, by its sender).

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
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import attrs
import trio

from remotemedia.config import DEFAULT_SESSION_BUFFER_BYTES
from remotemedia.environments import node_environment
from remotemedia.errors import (
    NodeError,
    PipelineClosedError,
    RemoteMediaError,
    UnknownNodeError,
    leaf_errors,
)
from remotemedia.executors.process import (
    ProcessNode,
    WorkerSettings,
    default_namespace,
    new_session_id,
)
from remotemedia.executors.registry import Executor, ExecutorRegistry
from remotemedia.media import INTERIM, Audio, RuntimeData, payload_size
from remotemedia.nodes import Node, NodeRegistry
from remotemedia.session.budget import ByteBudget
from remotemedia.session.graph import Graph

__all__ = ["NodeSeam", "NodeStats", "Result", "Session", "StatusCallback", "open_session"]

logger = logging.getLogger(__name__)

DEFAULT_EDGE_CAPACITY = 32
"""Items an edge buffers before its producer waits."""

CLEANUP_TIMEOUT = 5.0
"""Seconds the nodes' cleanup() calls (run concurrently) may take before being abandoned."""

_DRAIN_BUDGET = 256
"""Items a node takes without waiting before it checkpoints (lets cancellation in)."""


_Item: TypeAlias = tuple[int, RuntimeData, int]
"""What an edge carries: (sequence, data, bytes counted in the budget)."""
_Sized: TypeAlias = tuple["Result", int]
"""What the results channel carries: (result, bytes counted in the budget)."""

StatusCallback: TypeAlias = Callable[[str, str, str], Awaitable[None]]
"""Awaited with (node_id, status, message) while nodes initialise."""

NodeSeam: TypeAlias = Callable[[Node[Any]], Node[Any]]
"""Wraps each node of a manifest once built (a fault kit's seam): what the session runs."""


@attrs.frozen(slots=True)
class Result:
    """One output of a sink node, or the report of an input a node lost.

    Attributes:
        node_id: The sink node that produced it (for a failure: the failing node).
        sequence: The sequence number of the input that led to it.
        data: The output value (None for a failure).
        error: For a failure: the node lost this input (for example its worker
            process crashed and was restarted) but the session goes on.
    """

    node_id: str
    sequence: int
    data: RuntimeData | None
    error: NodeError | None = None


@attrs.define(slots=True)
class NodeStats:
    """Counters of one node in a session.

    Attributes:
        inputs: Inputs processed.
        outputs: Outputs produced.
        busy: Seconds spent inside the node's process() and flush().
        failures: Inputs lost to a failure the node recovered from.
        current: The sequence of the last input the node took (or flushes after),
            None before the first and once it has finished; see
            :meth:`Session.working` for whether it is still at it.
    """

    inputs: int = 0
    outputs: int = 0
    busy: float = 0.0
    failures: int = 0
    current: int | None = None


_PLAIN, _COROUTINE, _ASYNC_GENERATOR = range(3)


def _mode(function: Callable[..., Any]) -> int:
    if inspect.isasyncgenfunction(function):
        return _ASYNC_GENERATOR
    if inspect.iscoroutinefunction(function):
        return _COROUTINE
    return _PLAIN


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
        inboxes: dict[str, trio.MemorySendChannel[_Item]],
        results: trio.MemoryReceiveChannel[_Sized],
        stats: dict[str, NodeStats],
        budget: ByteBudget,
    ) -> None:
        self.graph = graph
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
        item = (sequence, data, size)
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
    observe: Callable[[str, float], None] | None = None,
    count: Callable[[str, str, int], None] | None = None,
    executors: ExecutorRegistry | None = None,
    workers: WorkerSettings | None = None,
    budget: ByteBudget | None = None,
    node_seam: NodeSeam | None = None,
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
        observe: Called with ``(node_type, seconds)`` for every input a node
            processes, for metrics.
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

    Raises:
        NodeError: A node failed to initialise (or did not within ``init_timeout``)
            or failed to process an input; raised alone, not inside an exception group.
    """
    builder = _Builder(executors or ExecutorRegistry(), workers, new_session_id(), count)
    nodes = _build_nodes(graph, registry, builder)
    if node_seam is not None:
        nodes = {node_id: node_seam(node) for node_id, node in nodes.items()}
    stats = {node_id: NodeStats() for node_id in graph.nodes}
    session: Session | None = None
    try:
        await _initialize_all(nodes, init_timeout, on_status)
        async with trio.open_nursery() as nursery:
            budget = budget or ByteBudget(DEFAULT_SESSION_BUFFER_BYTES)
            session = _wire(graph, nodes, stats, nursery, edge_capacity, observe, budget)
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
        await _cleanup_all(nodes.values())


def _build_nodes(graph: Graph, registry: NodeRegistry, builder: _Builder) -> dict[str, Node[Any]]:
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
class _Builder:
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


async def _initialize_all(
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
        slow = sorted(pending)
        first = nodes[slow[0]]
        building = [n for n in slow if getattr(nodes[n], "building_environment", False)]
        hint = (
            f"; {', '.join(building)} still wait for their Python environment to be built, "
            "which goes on: build it ahead (`remotemedia envs build` or `serve "
            "--prepare-envs`) or allow more --init-timeout"
            if building
            else ""
        )
        raise NodeError(
            first.node_id,
            first.node_type,
            f"did not finish initialising within {timeout:g} s "
            f"(still initialising: {', '.join(slow)}){hint}",
        )


async def _cleanup_all(nodes: Iterable[Node[Any]]) -> None:
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


def _wire(
    graph: Graph,
    nodes: dict[str, Node[Any]],
    stats: dict[str, NodeStats],
    nursery: trio.Nursery,
    capacity: int,
    observe: Callable[[str, float], None] | None,
    budget: ByteBudget,
) -> Session:
    """Create the channels, start one task per node, and return the session handle."""
    inbox_send: dict[str, trio.MemorySendChannel[_Item]] = {}
    inbox_receive: dict[str, trio.MemoryReceiveChannel[_Item]] = {}
    for node_id in graph.nodes:
        inbox_send[node_id], inbox_receive[node_id] = trio.open_memory_channel(capacity)
    results_send, results_receive = trio.open_memory_channel[_Sized](capacity)
    for node_id, spec in graph.nodes.items():
        outboxes: list[trio.MemorySendChannel[Any]]
        outboxes = [inbox_send[target].clone() for target in spec.successors]
        results = results_send.clone() if spec.is_sink else None
        if results is not None:
            outboxes.append(results)
        task = _NodeTask(
            node=nodes[node_id],
            inbox=inbox_receive[node_id],
            outboxes=outboxes,
            results=results,
            sink_id=node_id,
            stats=stats[node_id],
            failures=results_send.clone(),
            budget=budget,
            observe=functools.partial(observe, spec.node_type) if observe else None,
        )
        nursery.start_soon(task.run, name=f"node:{node_id}")
    # The originals stay with the session for client input; each node also holds
    # clones from its predecessors, so an inbox ends when all of them are closed.
    results_send.close()
    return Session(graph, inbox_send, results_receive, stats, budget)


@attrs.define(slots=True)
class _NodeTask:
    """One node's task: feed it from its inbox until end of input, then flush it.

    Attributes:
        node: The node.
        inbox: Its input: ``(sequence, data, size)`` items.
        outboxes: Each successor's inbox, and last the results channel for a sink.
        results: The results channel among the outboxes, for a sink.
        sink_id: The node id its results to the client are keyed by.
        stats: Its counters.
        failures: Where reports of lost inputs go (the results channel).
        budget: The session's byte budget, which every send takes from.
        observe: Called with the seconds each input took, if set.
    """

    node: Node[Any]
    inbox: trio.MemoryReceiveChannel[_Item]
    outboxes: list[trio.MemorySendChannel[Any]]
    results: trio.MemorySendChannel[Any] | None
    sink_id: str
    stats: NodeStats
    failures: trio.MemorySendChannel[_Sized]
    budget: ByteBudget
    observe: Callable[[float], None] | None = None

    async def report(self, failure: Result) -> None:
        """Tell the caller that an input was lost (the session goes on)."""
        with contextlib.suppress(trio.BrokenResourceError):
            # Not counted in the byte budget (size 0): it is tiny, and a node must be
            # able to report a lost input even when the budget is spent.
            await self.failures.send((failure, 0))

    async def run(self) -> None:
        if self.node.is_duplex():
            await self.run_duplex()
            return
        node, inbox, stats = self.node, self.inbox, self.stats
        process_mode = _mode(node.process)
        process: Any = node.process  # its return type depends on process_mode
        deliver = self.deliver
        budget = self.budget
        sequence = -1
        clock = time.perf_counter
        try:
            async with inbox:
                burst = _DRAIN_BUDGET
                while True:
                    try:
                        sequence, data, size = inbox.receive_nowait()
                        burst -= 1
                        if burst <= 0:
                            burst = _DRAIN_BUDGET
                            await trio.lowlevel.checkpoint()
                    except trio.WouldBlock:
                        burst = _DRAIN_BUDGET
                        budget.receiver_waiting()
                        try:
                            sequence, data, size = await inbox.receive()
                        except trio.EndOfChannel:
                            break
                    except trio.EndOfChannel:
                        break
                    budget.used -= size  # budget.give_back(size), inlined: this is the hot loop
                    if budget.waiting:
                        budget.wake()
                    if (
                        type(data) is Audio
                        and INTERIM in data.metadata
                        and inbox.statistics().current_buffer_used
                    ):
                        # Newer input waits: this interim would only be late. Skip it.
                        node.count("interim_skipped")
                        continue
                    started = clock()
                    stats.current = sequence
                    try:
                        if process_mode == _PLAIN:
                            output = process(data)
                        elif process_mode == _COROUTINE:
                            output = await process(data)
                        else:
                            async for item in process(data):
                                stats.outputs += 1
                                await deliver(sequence, item)
                            output = None
                    except Exception as exc:
                        error = NodeError(
                            node.node_id, node.node_type, _reason(exc), sequence=sequence
                        )
                        if not (isinstance(exc, RemoteMediaError) and exc.transient):
                            raise error from exc
                        # The node recovered (e.g. its worker was restarted): report
                        # the lost input and go on with the next one.
                        error.__cause__ = exc
                        stats.failures += 1
                        await self.report(Result(node.node_id, sequence, None, error))
                        continue
                    elapsed = clock() - started
                    stats.busy += elapsed
                    stats.inputs += 1
                    if self.observe is not None:
                        self.observe(elapsed)
                    if output is None:
                        continue
                    if type(output) is list or type(output) is tuple:
                        stats.outputs += len(output)
                        for item in output:
                            await deliver(sequence, item)
                    else:
                        stats.outputs += 1
                        # A node that passes its input on needs no second size count.
                        await deliver(sequence, output, size if output is data else -1)
            stats.current = max(sequence, 0)
            await self.flush(max(sequence, 0))
        finally:
            stats.current = None
            for outbox in self.outboxes:
                outbox.close()
            self.failures.close()

    async def run_duplex(self) -> None:
        """A duplex node drives itself: hand it its inputs and a way to emit."""
        node, stats = self.node, self.stats
        inputs = _Inputs(self.inbox, self.budget, stats)

        async def emit(data: RuntimeData) -> None:
            stats.outputs += 1
            await self.deliver(inputs.sequence, data)

        async def failed(reason: str) -> None:
            # Like an input a plain node lost: reported, and the session goes on.
            stats.failures += 1
            sequence = inputs.sequence
            error = NodeError(node.node_id, node.node_type, reason, sequence=sequence)
            await self.report(Result(node.node_id, sequence, None, error))

        node.on_input_failed = failed
        try:
            async with self.inbox:
                await node.run(inputs, emit)
        except Exception as exc:
            raise NodeError(node.node_id, node.node_type, _reason(exc)) from exc
        finally:
            stats.current = None
            for outbox in self.outboxes:
                outbox.close()
            self.failures.close()

    async def flush(self, sequence: int) -> None:
        """End of input: deliver what the node still holds, tagged with the last sequence."""
        node = self.node
        started = time.perf_counter()
        output: Any
        try:
            output = node.flush()
            if inspect.isawaitable(output):
                output = await output
        except Exception as exc:
            error = NodeError(node.node_id, node.node_type, f"flush failed: {_reason(exc)}")
            if not (isinstance(exc, RemoteMediaError) and exc.transient):
                raise error from exc
            # What the node held is lost (e.g. its worker died), but the inputs of
            # the other branches still finish: report it instead of failing.
            error.__cause__ = exc
            self.stats.failures += 1
            await self.report(Result(node.node_id, sequence, None, error))
            return
        self.stats.busy += time.perf_counter() - started
        if output is None:
            return
        items = output if isinstance(output, list | tuple) else [output]
        self.stats.outputs += len(items)
        for item in items:
            await self.deliver(sequence, item)

    async def deliver(self, sequence: int, data: RuntimeData, size: int = -1) -> None:
        """Send one output to every successor (or to the results), waiting for room.

        ``size`` is its :func:`~remotemedia.media.payload_size`, if already known.
        """
        if size < 0:
            size = payload_size(data)
        results = self.results
        item: Any = (sequence, data, size)
        budget = self.budget
        for outbox in self.outboxes:
            if outbox is results:
                item = (Result(self.sink_id, sequence, data), size)
            used = budget.used
            if used + size <= budget.limit or not used:
                budget.used = used + size  # budget.try_take(), inlined: the hot path
            else:
                await budget.take(size, outbox)
            try:
                try:
                    outbox.send_nowait(item)
                except trio.WouldBlock:
                    await outbox.send(item)
            except trio.BrokenResourceError:
                # The consumer is gone (the caller stopped reading results, or a
                # successor failed and the session is being torn down): nothing can
                # use this output any more.
                budget.give_back(size)
            except BaseException:
                budget.give_back(size)
                raise


class _Inputs:
    """A duplex node's inputs: the data of its inbox, given back to the byte budget as read.

    Attributes:
        sequence: The sequence number of the latest input (its outputs are tagged with it).
    """

    def __init__(
        self, inbox: trio.MemoryReceiveChannel[_Item], budget: ByteBudget, stats: NodeStats
    ) -> None:
        self._inbox, self._budget, self._stats = inbox, budget, stats
        self.sequence = 0

    def __aiter__(self) -> _Inputs:
        return self

    async def __anext__(self) -> RuntimeData:
        self._budget.receiver_waiting()  # a sender over budget may now hand it a message
        try:
            sequence, data, size = await self._inbox.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        self._budget.give_back(size)
        self.sequence = self._stats.current = sequence
        self._stats.inputs += 1
        return data


def _reason(exc: BaseException) -> str:
    # Nodes raise ValueError/TypeError with a message meant for the user; for any
    # other exception the type name is part of the information.
    text = str(exc)
    if isinstance(exc, RemoteMediaError | ValueError | TypeError) and text:
        return text
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


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
