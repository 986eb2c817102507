"""The StreamPipeline protocol, in Trio, independent of the transport.

:func:`serve_stream` speaks the ``remotemedia.v1`` streaming protocol over a pair of
Trio channels (requests in, responses out); the gRPC transport pumps those to and
from the wire. The flow, as existing clients expect it:

1. The first request must be ``init`` with a manifest and a non-empty client_version.
2. While the nodes initialise, ``result`` messages whose ``data_outputs`` has the key
   ``_status`` report progress (text ``[<node>] status=<...> message=<...>``); each
   param the node type does not declare (ignored, as the original ignored it) is
   reported there too, with ``status=warning``, unless the server refuses such params
   (``--strict-params``).
3. ``ready`` carries the session id, the recommended chunk size and the buffer latency.
4. ``data_chunk`` (or the deprecated ``audio_chunk``) goes to its ``node_id`` (or to the
   source nodes); every output of a sink node comes back as a ``result`` keyed by the
   sink's id, with the sequence of the input that caused it.
5. Every 10 chunks a ``metrics`` message is sent.
6. ``control`` CLOSE (or the client half-closing) flushes in-flight work, then
   ``closed``; CANCEL stops at once, then ``closed``.

Where the original was weak this is strictly better without breaking its clients:
errors are typed (see :mod:`~remotemedia.service.status`), invalid params JSON,
unknown target nodes and numeric fields out of range (``channels = 0``, ...) are
errors, sequences may not go backwards, limits are enforced, and a half-close also
gets ``closed``.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import logging
import time
import uuid
from typing import Any, Protocol

import trio

from remotemedia.errors import (
    ClientStalledError,
    InvalidRequestError,
    NodeError,
    RemoteMediaError,
    ResourceLimitError,
    UnknownNodeError,
)
from remotemedia.manifest import ParamWarning
from remotemedia.media import Audio, RuntimeData, kind_of
from remotemedia.service.context import ServiceContext
from remotemedia.service.convert import (
    audio_from_wire,
    data_from_wire,
    data_to_wire,
)
from remotemedia.service.live import session_view
from remotemedia.service.status import SHUTTING_DOWN, error_response, lost_input_response
from remotemedia.service.turns import TurnReporter
from remotemedia.service.wire import CallOrigin
from remotemedia.session import Graph, Result, Session, open_session
from remotemedia.session.budget import ByteBudget, Receiver
from remotemedia.session.manager import SessionRejected
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import streaming_pb2 as spb

__all__ = ["SHUTTING_DOWN", "Responses", "serve_stream"]

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 4096
MAX_BUFFER_LATENCY_MS = 100
METRICS_EVERY = 10
FLUSH_TIMEOUT = 10.0
"""Seconds a CLOSE waits for in-flight work before answering ``closed`` anyway."""

_KIND_NAMES = {"data_chunk": "DataChunk", "audio_chunk": "AudioChunk", "control": "StreamControl"}


class Responses(Receiver, Protocol):
    """Where a session's responses go: a channel, or a transport's sink like one.

    A ``trio.MemorySendChannel[bytes]`` is one. A sink must keep a channel's
    semantics: ``send_nowait`` raises ``trio.WouldBlock`` when full, ``send`` waits,
    ``close`` ends the stream.
    """

    def send_nowait(self, value: bytes) -> None:
        """Take one response now, or raise ``trio.WouldBlock``."""

    async def send(self, value: bytes) -> None:
        """Take one response, waiting for room."""

    def close(self) -> None:
        """No more responses."""


async def serve_stream(
    requests: trio.MemoryReceiveChannel[tuple[spb.StreamRequest, int]],
    responses: Responses,
    context: ServiceContext,
    budget: ByteBudget | None = None,
    origin: CallOrigin | None = None,
) -> bool:
    """Serve one StreamPipeline call until it closes, fails, or the server drains.

    Errors the client caused or a node raised are answered in-band with one typed
    ``error`` response, then the stream ends. Raises only :class:`SessionRejected`
    (the server is full or shutting down), which the transport turns into a gRPC
    status, and cancellation.

    Args:
        requests: The client's messages, in order, each with its size on the wire;
            ends when the client half-closes.
        responses: Where the messages for the client go, serialized (each is
            serialized once, here, which also gives its size).
        context: What every call shares.
        budget: The call's byte budget, if the transport counts its queues against
            it: each request's size was taken when it was queued and is given back
            here; each response's is taken here and given back by the transport
            when it takes it off the queue. Default: one of the server's
            ``max_session_buffer_bytes`` for this call alone.
        origin: Where the call comes from (its edge, a client's traceparent).

    Returns:
        True if the call ended without an error response.
    """
    stream: _Stream | None = None
    sent: pb.ErrorResponse | None = None
    finished = False
    try:
        budget = budget or ByteBudget(context.limits.max_session_buffer_bytes)
        stream = _Stream(requests, responses, context, budget, origin or CallOrigin())
        try:
            await stream.run()
        except SessionRejected as rejected:
            context.metrics.refused.inc(reason="draining" if rejected.shutting_down else "full")
            raise
        except Exception as error:
            if not isinstance(error, RemoteMediaError):
                logger.exception(
                    "StreamPipeline session %s failed unexpectedly.", stream.session_id
                )
            sent = error_response(error)
            context.metrics.errors.inc(error_type=pb.ErrorType.Name(sent.error_type))
            if isinstance(error, ClientStalledError):
                # Waiting would only hold the call longer: deliver it only if there is room.
                with contextlib.suppress(trio.WouldBlock):
                    stream.respond_nowait(spb.StreamResponse(error=sent))
            else:
                with contextlib.suppress(ClientStalledError):
                    await stream.respond(spb.StreamResponse(error=sent))
            # Its traceback runs through the session's frames and back to the exception
            # group that holds it: a reference cycle that would keep the whole session
            # (its queued messages included) alive until a full garbage collection.
            error.__traceback__ = None
            finished = True
            return False
        finished = True
        return True
    finally:
        responses.close()
        if stream is not None:  # however it ended (a cancelled one too): its log line
            stream.log_end(sent, cancelled=not finished)


def _unfinished(session: Session) -> RemoteMediaError:
    """The error for a CLOSE whose in-flight work did not finish within FLUSH_TIMEOUT.

    It names the node holding the oldest unfinished input (most likely hung) and
    that input's sequence: from it on, inputs may lack some or all of their results.
    """
    busy = session.working()
    if not busy:
        return ResourceLimitError(
            f"In-flight work did not finish within {FLUSH_TIMEOUT:g} s of the client's "
            "close; the session was ended."
        )
    sequence, node_id = busy[0]
    return NodeError(
        node_id,
        session.graph.nodes[node_id].node_type,
        f"it did not finish input #{sequence} within {FLUSH_TIMEOUT:g} s of the client's "
        f"close (it may hang), so the session was ended; inputs from #{sequence} on may "
        "lack results",
        sequence=sequence,
    )


class _Stream:
    """The state of one StreamPipeline call."""

    def __init__(
        self,
        requests: trio.MemoryReceiveChannel[tuple[spb.StreamRequest, int]],
        responses: Responses,
        context: ServiceContext,
        budget: ByteBudget,
        origin: CallOrigin,
    ) -> None:
        self.requests = requests
        self.origin = origin
        self.responses = responses
        self.context = context
        self.budget = budget
        self.limits = context.limits
        self.session_id = str(uuid.uuid4())
        self.started = time.monotonic()
        self.chunks = 0
        self.last_sequence = -1
        self.breakdown: collections.Counter[str] = collections.Counter()
        # Arrival time and outputs so far of recent inputs, for latency and the
        # per-input output index; bounded, oldest dropped first.
        self.arrivals: collections.OrderedDict[int, list[float]] = collections.OrderedDict()
        self.latency_sum = 0.0
        self.latency_count = 0
        self.outputs = 0
        self._results_done = trio.Event()
        self._input_stopped = False
        self._receiving = trio.CancelScope()
        self.turns: TurnReporter | None = None
        self.reason = ""  # why it closed, as `closed` said
        self.lost = 0  # inputs a node lost (reported to the client as errors)

    async def run(self) -> None:
        manager = self.context.manager
        with trio.CancelScope() as call, manager.waiting(call):
            with trio.move_on_after(self.limits.idle_timeout) as waited:
                received = await self.receive()
        if call.cancelled_caught:
            raise SessionRejected(
                "The server is shutting down and accepts no new sessions.", shutting_down=True
            )
        if waited.cancelled_caught:
            raise ResourceLimitError(
                f"No StreamInit within {self.limits.idle_timeout:g} s (the session idle timeout)."
            )
        if received is None:
            return  # the client closed without starting a session
        first = received[0]
        kind = first.WhichOneof("request")
        if kind != "init":
            what = _KIND_NAMES.get(kind, kind) if kind else "an empty StreamRequest (no field set)"
            raise InvalidRequestError(f"StreamInit required before {what}.")
        init = first.init
        if not init.client_version:
            raise InvalidRequestError("client_version required in StreamInit.")
        if not init.HasField("manifest"):
            raise InvalidRequestError("manifest required in StreamInit.")
        limits = self.limits = self.context.limits_for(init.resource_limits, "init.resource_limits")
        if init.expected_chunk_size > limits.max_chunk_samples:
            raise InvalidRequestError(
                f"init.expected_chunk_size is {init.expected_chunk_size}; it must be 0 (the "
                f"default, {DEFAULT_CHUNK_SIZE}) or between 1 and {limits.max_chunk_samples} "
                "(this session's limit of samples per chunk)."
            )
        graph, warnings = self.context.compile(init.manifest, limits)
        await self.context.seams.admission()
        with trio.CancelScope() as scope, manager.admit(self.session_id, scope, self.stop_input):
            with trio.move_on_after(limits.max_duration) as lifetime:
                chunk_size = init.expected_chunk_size or DEFAULT_CHUNK_SIZE
                await self._serve(graph, chunk_size, warnings)
            if lifetime.cancelled_caught:
                raise ResourceLimitError(
                    f"The session reached its maximum duration of {limits.max_duration:g} s."
                )
        if scope.cancelled_caught and manager.draining:
            with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                await self._closed(SHUTTING_DOWN)

    def stop_input(self) -> None:
        """Take no more input: the server is draining. In-flight work finishes, then `closed`."""
        self._input_stopped = True
        self._receiving.cancel()

    async def _serve(self, graph: Graph, chunk_size: int, warnings: list[ParamWarning]) -> None:
        registry, limits = self.context.registry, self.limits
        count = len(graph.nodes)
        await self._status("_system", "initializing", f"Initializing {count} nodes...")
        self.context.log_param_warnings(warnings, f"StreamPipeline session {self.session_id}")
        for warning in warnings:
            await self._status(warning.node_id, "warning", str(warning))
        tracing = self.context.tracing
        trace = (
            tracing.start_session(
                self.session_id, graph.name, self.origin.edge, self.origin.traceparent
            )
            if tracing is not None
            else None
        )
        self.turns = TurnReporter.for_session(
            self.context.metrics, self.session_id, graph.name, trace
        )

        async with open_session(
            graph,
            registry,
            init_timeout=limits.init_timeout,
            on_status=self._status,
            time_nodes=self.context.metrics.node_timer,
            worker_calls=self.turns.worker_call,
            count=self.context.metrics.count_event,
            executors=self.context.executors,
            workers=self.context.workers,
            node_seam=self.context.seams.node,
            budget=self.budget,
            turns=self.turns,
        ) as session:
            await self._status("_system", "ready", f"All {count} nodes ready for streaming")
            await self.respond(
                spb.StreamResponse(
                    ready=spb.StreamReady(
                        session_id=self.session_id,
                        recommended_chunk_size=chunk_size,
                        max_buffer_latency_ms=MAX_BUFFER_LATENCY_MS,
                    )
                )
            )
            self.context.sessions[self.session_id] = session
            self.context.views[self.session_id] = functools.partial(self.describe, session)
            unfinished: RemoteMediaError | None = None
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._forward_results, session)
                    reason = await self._read_requests(session)
                    if reason is None:  # CANCEL: stop now
                        nursery.cancel_scope.cancel()
                        reason = "Client requested cancel"
                    else:
                        await session.send_eof()
                        with trio.move_on_after(FLUSH_TIMEOUT) as flushing:
                            await self._results_done.wait()
                        if flushing.cancelled_caught:
                            unfinished = _unfinished(session)
                            nursery.cancel_scope.cancel()
            finally:
                self.context.sessions.pop(self.session_id, None)
                self.context.views.pop(self.session_id, None)
            if unfinished is not None:
                # Not `closed`: inputs without their results must be reported.
                raise unfinished
            await self._closed(reason, session)

    async def _read_requests(self, session: Session) -> str | None:
        """Feed chunks into the session until CLOSE/half-close (a reason) or CANCEL (None)."""
        sources = set(session.graph.nodes)
        while True:
            if self._input_stopped:
                return SHUTTING_DOWN
            try:
                received = self._receive_waiting()
            except trio.WouldBlock:
                with (
                    trio.CancelScope() as self._receiving,
                    trio.move_on_after(self.limits.idle_timeout) as idle,
                ):
                    received = await self.receive()
                if self._receiving.cancelled_caught:
                    return SHUTTING_DOWN
                if idle.cancelled_caught:
                    raise ResourceLimitError(
                        f"No message from the client for {self.limits.idle_timeout:g} s "
                        "(the session idle timeout); closing the session."
                    ) from None
            if received is None:
                return "Client closed the stream"
            request, size = received
            kind = request.WhichOneof("request")
            if kind == "init":
                raise InvalidRequestError("StreamInit already received; send it only once.")
            if kind == "control":
                command = request.control.command
                if command == spb.StreamControl.COMMAND_CANCEL:
                    return None
                if command == spb.StreamControl.COMMAND_CLOSE:
                    return "Client requested close"
                if command == spb.StreamControl.COMMAND_UNSPECIFIED:
                    return "Unspecified"  # the original's reason; handled like CLOSE
                raise InvalidRequestError(
                    f"StreamControl.command {command} is not CLOSE or CANCEL."
                )
            if kind is None:
                raise InvalidRequestError(
                    "StreamRequest has none of init, data_chunk, control set."
                )
            try:
                if size > self.limits.max_message_bytes:
                    raise ResourceLimitError(
                        f"A {kind} of {size} bytes exceeds this session's "
                        f"{self.limits.max_message_bytes}-byte message limit."
                    )
                node_id, sequence, data = self._chunk(request, kind)
            except RemoteMediaError:
                self.context.metrics.chunks.inc(status="error")
                raise
            if node_id and node_id not in sources:
                known = ", ".join(sources)
                raise UnknownNodeError(
                    f"{kind}.node_id '{node_id}' is not a node of this pipeline; its nodes are: "
                    f"{known}."
                )
            del request, received  # converted: hold one copy of the payload while waiting
            self._arrived(sequence, data)
            await session.send(data, node_id=node_id or None, sequence=sequence)
            self.chunks += 1
            self.context.metrics.chunks.inc(status="success")
            if self.chunks % METRICS_EVERY == 0:
                await self.respond(spb.StreamResponse(metrics=self._metrics()))

    def _chunk(self, request: spb.StreamRequest, kind: str) -> tuple[str, int, RuntimeData]:
        if kind == "audio_chunk":
            chunk = request.audio_chunk
            if not chunk.HasField("buffer"):
                raise InvalidRequestError("audio_chunk.buffer is missing.")
            data: RuntimeData = audio_from_wire(chunk.buffer, "audio_chunk.buffer")
            node_id, sequence = chunk.node_id, chunk.sequence
        else:
            chunk_ = request.data_chunk
            if chunk_.HasField("buffer"):
                data = data_from_wire(chunk_.buffer, "data_chunk.buffer")
            elif chunk_.named_buffers:
                # Like the original, a named_buffers chunk delivers its first buffer.
                name = next(iter(chunk_.named_buffers))
                data = data_from_wire(
                    chunk_.named_buffers[name], f"data_chunk.named_buffers[{name}]"
                )
            else:
                raise InvalidRequestError("DataChunk must have buffer or named_buffers.")
            node_id, sequence = chunk_.node_id, chunk_.sequence
        if sequence < self.last_sequence:
            raise InvalidRequestError(
                f"{kind}.sequence {sequence} goes backwards (the previous chunk had "
                f"{self.last_sequence}); sequences must not decrease."
            )
        self.last_sequence = sequence
        if isinstance(data, Audio):
            if data.samples.size > self.limits.max_chunk_samples:
                raise ResourceLimitError(
                    f"{kind} holds {data.samples.size} audio samples; the limit is "
                    f"{self.limits.max_chunk_samples} per chunk. Send smaller chunks."
                )
            self.context.metrics.audio_samples.inc(data.samples.size)
        return node_id, int(sequence), data

    def _arrived(self, sequence: int, data: RuntimeData) -> None:
        self.breakdown[kind_of(data)] += 1
        self.arrivals[sequence] = [time.perf_counter(), 0]
        while len(self.arrivals) > 4096:
            self.arrivals.popitem(last=False)

    async def _forward_results(self, session: Session) -> None:
        latency = self.context.metrics.chunk_latency
        try:
            async for result in session:
                if result.error is not None:
                    # A node lost this input but recovered: report it typed, go on.
                    self.lost += 1
                    response = lost_input_response(result.error, result.sequence)
                    self.context.metrics.errors.inc(
                        error_type=pb.ErrorType.Name(response.error_type)
                    )
                    await self.respond(spb.StreamResponse(error=response))
                    continue
                await self.respond(spb.StreamResponse(result=self._result(result, latency)))
        finally:
            self._results_done.set()

    def _result(self, result: Result, latency: Any) -> spb.ChunkResult:
        assert result.data is not None
        self.outputs += 1
        arrival = self.arrivals.get(result.sequence)
        elapsed_ms = 0.0
        index = 0
        if arrival is not None:
            elapsed = time.perf_counter() - arrival[0]
            elapsed_ms = elapsed * 1000
            arrival[1] += 1
            index = int(arrival[1])
            if index == 1:
                latency.observe(elapsed)
                self.latency_sum += elapsed_ms
                self.latency_count += 1
        return spb.ChunkResult(
            sequence=result.sequence,
            data_outputs={result.node_id: data_to_wire(result.data)},
            processing_time_ms=elapsed_ms,
            total_items_processed=index,
        )

    def _metrics(self) -> spb.StreamMetrics:
        return spb.StreamMetrics(
            session_id=self.session_id,
            chunks_processed=self.chunks,
            average_latency_ms=self.latency_sum / self.latency_count if self.latency_count else 0.0,
            total_items=self.outputs,
            data_type_breakdown=dict(self.breakdown),
        )

    def _receive_waiting(self) -> tuple[spb.StreamRequest, int] | None:
        """A request already waiting (the common case under load: no scopes needed).

        Returns:
            The request and its size, or None at the end of the requests.

        Raises:
            trio.WouldBlock: None is waiting.
        """
        try:
            request, size = self.requests.receive_nowait()
        except trio.EndOfChannel:
            return None
        self.budget.give_back(size)
        return request, size

    async def receive(self) -> tuple[spb.StreamRequest, int] | None:
        """The client's next request, or None once it has half-closed its side.

        Returns:
            The request and its size on the wire, or None.
        """
        requests = self.requests
        try:
            request, size = requests.receive_nowait()
        except trio.WouldBlock:
            self.budget.receiver_waiting()
            try:
                request, size = await requests.receive()
            except trio.EndOfChannel:
                return None
        except trio.EndOfChannel:
            return None
        self.budget.give_back(size)
        return request, size

    def respond_nowait(self, response: spb.StreamResponse | bytes) -> None:
        """Queue one response for the client if there is room now.

        Raises:
            trio.WouldBlock: There is not.
        """
        data = response if isinstance(response, bytes) else response.SerializeToString()
        size = len(data)
        if not self.budget.try_take(size, self.responses):
            raise trio.WouldBlock
        try:
            self.responses.send_nowait(data)
        except BaseException:
            self.budget.give_back(size)
            raise

    async def respond(self, response: spb.StreamResponse) -> None:
        """Queue one response for the client, waiting while the client is behind.

        Raises:
            ClientStalledError: The client took no response for the idle timeout
                (a client that stops reading must not hold its session forever).
        """
        data = response.SerializeToString()
        del response  # its payload is in ``data`` now: one copy in hand while waiting, not two
        try:
            self.respond_nowait(data)
            return
        except trio.WouldBlock:
            pass
        size = len(data)
        with trio.move_on_after(self.limits.idle_timeout):
            await self.budget.take(size, self.responses)
            try:
                await self.responses.send(data)
            except BaseException:
                self.budget.give_back(size)
                raise
            return
        raise ClientStalledError(
            f"The client stopped reading results: none was taken for "
            f"{self.limits.idle_timeout:g} s (the session idle timeout); closing the session."
        )

    async def _status(self, node_id: str, status: str, message: str) -> None:
        text = f"[{node_id}] status={status} message={message}"
        buffer = pb.DataBuffer(text=pb.TextBuffer(text_data=text.encode(), encoding="utf-8"))
        await self.respond(
            spb.StreamResponse(result=spb.ChunkResult(sequence=0, data_outputs={"_status": buffer}))
        )

    def describe(self, session: Session) -> dict[str, Any]:
        """The session as ``remotemedia top`` shows it (:mod:`remotemedia.service.live`)."""
        return session_view(
            session_id=self.session_id,
            edge=self.origin.edge,
            age_s=time.monotonic() - self.started,
            chunks=self.chunks,
            results=self.outputs,
            lost=self.lost,
            session=session,
            turns=self.turns,
        )

    def log_end(self, error: pb.ErrorResponse | None = None, *, cancelled: bool = False) -> None:
        """Log the session's end: one line with its fields (``session_end``), if it started.

        Also ends its trace. ``cancelled``: the call was cancelled (the client went
        away, or a drain ran out of time) before it could end otherwise.
        """
        turns = self.turns
        if turns is None:
            return  # no session was started: nothing to tell
        outcome = "error" if error is not None else "cancelled" if cancelled else "closed"
        reason = error.message if error is not None else self.reason
        fields: dict[str, Any] = {
            "event": "session_end",
            "session": self.session_id,
            "pipeline": turns.pipeline,
            "outcome": outcome,
            "reason": reason or ("cancelled" if cancelled else ""),
            "duration_s": round(time.monotonic() - self.started, 3),
            "chunks": self.chunks,
            "results": self.outputs,
            "lost": self.lost,
            "turns": dict(turns.outcomes),
        }
        if error is not None:
            fields["error_type"] = pb.ErrorType.Name(error.error_type)
        if turns.trace is not None:
            turns.trace.end(fields["outcome"], fields.get("error_type"))
        logger.info(
            "Session %s (%s) %s after %.1f s: %s; %d chunks in, %d results out, %d lost, %d turns.",
            self.session_id,
            turns.pipeline,
            {"error": "failed", "cancelled": "was cancelled", "closed": "closed"}[outcome],
            fields["duration_s"],
            fields["reason"],
            self.chunks,
            self.outputs,
            self.lost,
            sum(turns.outcomes.values()),
            extra={"fields": fields},
        )

    async def _closed(self, reason: str, session: Session | None = None) -> None:
        self.reason = reason
        busy = sum(s.busy for s in session.stats.values()) if session is not None else 0.0
        metrics = pb.ExecutionMetrics(
            wall_time_ms=(time.monotonic() - self.started) * 1000,
            cpu_time_ms=busy * 1000,
            data_type_breakdown=dict(self.breakdown),
        )
        await self.respond(
            spb.StreamResponse(
                closed=spb.StreamClosed(
                    session_id=self.session_id, final_metrics=metrics, reason=reason
                )
            )
        )
