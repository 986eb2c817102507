"""One node's task in a running session: the loop that feeds it, and what it sends on.

A session runs one :class:`NodeTask` per node (see :mod:`remotemedia.session.session`
for the data path). Every input of every node passes through :meth:`NodeTask.feed`:
it is the runtime's hot loop, so it inlines what it can (the byte budget's
operations, the counters) and leaves what is rare (a lost input's report, a
streaming node's outputs, a duplex node, the flush at end of input) to methods of
their own.

Rules the loop keeps (the session's rules 1 to 4 rest on them):

1. Drain before waiting: everything already in the inbox is taken without yielding,
   with a checkpoint every ``_DRAIN_BUDGET`` items so that cancellation gets in.
2. Every item's bytes go back to the session's byte budget as it is taken, and each
   output takes its own as it is sent (an output that *is* its input keeps its size).
3. Interim skip: an interim ``Audio`` (its metadata holds
   :data:`~remotemedia.media.INTERIM`) is skipped when newer input already waits,
   since it could only be late; the node counts ``interim_skipped``.
4. A transient error (:attr:`~remotemedia.errors.RemoteMediaError.transient`, such as
   a worker that was restarted) loses only its input: it is reported as a failed
   :class:`~remotemedia.session.Result` and the loop goes on. Any other error ends the
   task, and so the session, as a :class:`~remotemedia.errors.NodeError`.
5. However the task ends, its outputs are closed, so its successors see end of input.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeAlias

import attrs
import trio

from remotemedia.errors import NodeError, RemoteMediaError
from remotemedia.media import INTERIM, Audio, RuntimeData, payload_size
from remotemedia.nodes import Node
from remotemedia.observability.turns import Watch
from remotemedia.session.budget import ByteBudget
from remotemedia.session.results import NodeStats, Result

__all__ = ["Inputs", "Item", "NodeTask", "NodeTimer", "Sized", "WatchedNodeTask"]

_DRAIN_BUDGET = 256
"""Items a node takes without waiting before it checkpoints (lets cancellation in)."""

Item: TypeAlias = tuple[int, RuntimeData, int, float]
"""What an edge carries: (sequence, data, bytes counted in the budget, when it was queued).

The time is the session's clock's (:func:`time.perf_counter` unless ``open_session``
was given another): a node's queue wait is when it takes the item minus it. A session
whose nodes nobody times stamps 0.0 (a clock read per item is a tenth of a hop)."""
NodeTimer: TypeAlias = Callable[[float, float], None]
"""Given each input a node processes: (seconds it waited in the inbox, seconds processed)."""
Sized: TypeAlias = tuple[Result, int]
"""What the results channel carries: (result, bytes counted in the budget)."""

_PLAIN, _COROUTINE, _ASYNC_GENERATOR = range(3)


def _mode(function: Callable[..., Any]) -> int:
    if inspect.isasyncgenfunction(function):
        return _ASYNC_GENERATOR
    if inspect.iscoroutinefunction(function):
        return _COROUTINE
    return _PLAIN


@attrs.define(slots=True)
class NodeTask:
    """One node's task: feed it from its inbox until end of input, then flush it.

    Attributes:
        node: The node.
        inbox: Its input: ``(sequence, data, size, queued)`` items.
        outboxes: Each successor's inbox, and last the results channel for a sink.
        results: The results channel among the outboxes, for a sink.
        sink_id: The node id its results to the client are keyed by.
        stats: Its counters.
        failures: Where reports of lost inputs go (the results channel).
        budget: The session's byte budget, which every send takes from.
        observe: Given each input's queue wait and processing seconds, if set.
        clock: What times are read from (the session's, see ``open_session``).
        stamp: What the items it sends are stamped with (the clock, when the
            session's nodes are timed; None: they are not, and each item says 0.0).
        call_started: When the node began on the input it works on (its clock; -1.0
            for a duplex node, which has no calls), for a watch
            (:class:`WatchedNodeTask`).
    """

    node: Node[Any]
    inbox: trio.MemoryReceiveChannel[Item]
    outboxes: list[trio.MemorySendChannel[Any]]
    results: trio.MemorySendChannel[Any] | None
    sink_id: str
    stats: NodeStats
    failures: trio.MemorySendChannel[Sized]
    budget: ByteBudget
    observe: NodeTimer | None = None
    clock: Callable[[], float] = time.perf_counter
    stamp: Callable[[], float] | None = None
    call_started: float = -1.0

    async def run(self) -> None:
        """Feed the node every input of its inbox, send on its outputs, then flush it."""
        if self.node.is_duplex():
            await self.run_duplex()
            return
        try:
            async with self.inbox:
                sequence = await self.feed()
            self.stats.current = max(sequence, 0)
            await self.flush(max(sequence, 0))
        finally:
            self.close()

    async def feed(self) -> int:
        """Process the inbox's inputs until it ends; return the last one's sequence (or -1).

        The per-input path: what every input of every node goes through, so it calls
        no method it can do without (the byte budget and counters are inlined).
        """
        node, inbox, stats = self.node, self.inbox, self.stats
        process_mode = _mode(node.process)
        process: Any = node.process  # its return type depends on process_mode
        deliver = self.deliver
        budget = self.budget
        sequence = -1
        clock = self.clock
        burst = _DRAIN_BUDGET
        while True:
            try:
                sequence, data, size, queued = inbox.receive_nowait()
                burst -= 1
                if burst <= 0:
                    burst = _DRAIN_BUDGET
                    await trio.lowlevel.checkpoint()
            except trio.WouldBlock:
                burst = _DRAIN_BUDGET
                budget.receiver_waiting()
                try:
                    sequence, data, size, queued = await inbox.receive()
                except trio.EndOfChannel:
                    return sequence
            except trio.EndOfChannel:
                return sequence
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
            started = self.call_started = clock()
            stats.current = sequence
            try:
                if process_mode == _PLAIN:
                    output = process(data)
                elif process_mode == _COROUTINE:
                    output = await process(data)
                else:
                    await self.relay(sequence, process(data))
                    output = None
            except Exception as exc:
                error = NodeError(node.node_id, node.node_type, _reason(exc), sequence=sequence)
                # If the node recovered (e.g. its worker was restarted), report the
                # lost input and go on with the next one.
                await self.lose_or_raise(error, exc, sequence)
                continue
            # The counters, inlined like the budget: every input passes here.
            elapsed = clock() - started
            stats.busy += elapsed
            stats.inputs += 1
            if self.observe is not None:
                self.observe(started - queued, elapsed)
            if output is None:
                continue
            if type(output) is list or type(output) is tuple:
                await self.deliver_all(sequence, output)
            else:
                stats.outputs += 1
                # A node that passes its input on needs no second size count.
                await deliver(sequence, output, size if output is data else -1)

    async def run_duplex(self) -> None:
        """A duplex node drives itself: hand it its inputs and a way to emit."""
        node, stats = self.node, self.stats
        inputs = Inputs(self.inbox, self.budget, stats)

        async def emit(data: RuntimeData) -> None:
            stats.outputs += 1
            await self.deliver(inputs.sequence, data)

        async def failed(reason: str) -> None:
            # Like an input a plain node lost: reported, and the session goes on.
            sequence = inputs.sequence
            error = NodeError(node.node_id, node.node_type, reason, sequence=sequence)
            await self.lose(error, sequence)

        node.on_input_failed = failed
        try:
            async with self.inbox:
                await node.run(inputs, emit)
        except Exception as exc:
            raise NodeError(node.node_id, node.node_type, _reason(exc)) from exc
        finally:
            self.close()

    async def relay(self, sequence: int, outputs: AsyncIterator[RuntimeData]) -> None:
        """Send on each output of a streaming ``process()`` as the node yields it."""
        stats = self.stats
        async for item in outputs:
            stats.outputs += 1
            await self.deliver(sequence, item)

    async def flush(self, sequence: int) -> None:
        """End of input: deliver what the node still holds, tagged with the last sequence."""
        node = self.node
        started = self.clock()
        output: Any
        try:
            output = node.flush()
            if inspect.isawaitable(output):
                output = await output
        except Exception as exc:
            error = NodeError(node.node_id, node.node_type, f"flush failed: {_reason(exc)}")
            # What the node held is lost (e.g. its worker died), but the inputs of
            # the other branches still finish: report it instead of failing.
            await self.lose_or_raise(error, exc, sequence)
            return
        self.stats.busy += self.clock() - started
        if output is None:
            return
        await self.deliver_all(sequence, output if isinstance(output, list | tuple) else [output])

    async def lose_or_raise(self, error: NodeError, exc: Exception, sequence: int) -> None:
        """Report input ``sequence`` lost to ``exc`` if that is transient, else raise ``error``.

        Called while ``exc`` is handled; ``error`` is what the caller is told, caused by it.
        """
        if not (isinstance(exc, RemoteMediaError) and exc.transient):
            raise error from exc
        error.__cause__ = exc
        await self.lose(error, sequence)

    async def lose(self, error: NodeError, sequence: int) -> None:
        """Count input ``sequence`` as lost and report it to the caller (the session goes on)."""
        self.stats.failures += 1
        with contextlib.suppress(trio.BrokenResourceError):
            # Not counted in the byte budget (size 0): it is tiny, and a node must be
            # able to report a lost input even when the budget is spent.
            await self.failures.send((Result(self.node.node_id, sequence, None, error), 0))

    async def deliver_all(self, sequence: int, items: Sequence[RuntimeData]) -> None:
        """Send each of several outputs of one input on, in order."""
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
        stamp = self.stamp
        item: Any = (sequence, data, size, stamp() if stamp is not None else 0.0)
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

    def close(self) -> None:
        """The node is done: it works on nothing, and every consumer sees its output end."""
        self.stats.current = None
        for outbox in self.outboxes:
            outbox.close()
        self.failures.close()


@attrs.define(slots=True)
class WatchedNodeTask(NodeTask):
    """A node's task whose every output is shown to a watch first (the turn tracker).

    A class of its own so that the nodes nobody watches (most of them: a resampler,
    a pass-through) do not even test for a watch on the hot path.

    Attributes:
        watch: Called with ``(now, output, when the node began the call)``.
    """

    watch: Watch = attrs.field(kw_only=True)

    async def deliver(self, sequence: int, data: RuntimeData, size: int = -1) -> None:
        """Show the output to the watch, then send it on as any node task does."""
        self.watch(self.clock(), data, self.call_started)
        await NodeTask.deliver(self, sequence, data, size)


class Inputs:
    """A duplex node's inputs: the data of its inbox, given back to the byte budget as read.

    Attributes:
        sequence: The sequence number of the latest input (its outputs are tagged with it).
    """

    def __init__(
        self, inbox: trio.MemoryReceiveChannel[Item], budget: ByteBudget, stats: NodeStats
    ) -> None:
        self._inbox, self._budget, self._stats = inbox, budget, stats
        self.sequence = 0

    def __aiter__(self) -> Inputs:
        return self

    async def __anext__(self) -> RuntimeData:
        self._budget.receiver_waiting()  # a sender over budget may now hand it a message
        try:
            sequence, data, size, _ = await self._inbox.receive()
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
