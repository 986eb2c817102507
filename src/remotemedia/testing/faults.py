"""Fault-injection kit: run a pipeline under a fault plan and check its guarantees.

In the spirit of :mod:`trio.testing`: :func:`run_scenario` streams inputs through a
pipeline the way a client does, over the real protocol (``transport="inprocess"``:
the service's call runner over memory channels, so Trio's autojump clock works;
``"grpc"``: the real server, on its default transport, on a loopback socket and a
grpclib client), with a :class:`~remotemedia.faults.FaultPlan` installed, and returns
a :class:`Trace`.
:func:`violations` checks the runtime's guarantees on it against a fault-free run
of the same scenario::

    baseline = await run_scenario(manifest, inputs)
    trace = await run_scenario(manifest, inputs, FaultPlan.random(7, node_ids=["asr"]))
    assert violations(trace, baseline) == []

The guarantees :func:`violations` checks are listed in
:mod:`remotemedia.testing.guarantees`; what a trace holds, and why its digest
repeats, in :mod:`remotemedia.testing.trace`; the resources a scenario must give
back in :mod:`remotemedia.testing.resources`. This module runs scenarios:

1. A scenario's service (the real server's, for ``grpc``) is built by the server's
   own composition root with the kit's seams (:mod:`remotemedia.testing.seams`): its
   nodes, worker links and call wires are wrapped, and its plan is carried out
   there. The runtime runs the code it runs without a plan.
2. A fault-free session runs beside it (the ``bystander`` guarantee) through the
   same runtime in the same process, built without seams.
3. The bystander's node ids are those of the scenario with ``BYSTANDER_PREFIX``; a
   fault at a node's site must still name its node, so that plans keep meaning the
   same whether or not a bystander runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol

import attrs
import trio

from remotemedia.config import Limits, ServerConfig, WorkerConfig
from remotemedia.errors import RemoteMediaError
from remotemedia.faults import (
    NODE_SITES,
    Action,
    ActionKind,
    Fault,
    FaultPlan,
    FaultPlanError,
    Site,
)
from remotemedia.manifest import manifest_from_dict
from remotemedia.media import RuntimeData
from remotemedia.nodes import NodeRegistry, builtin_registry
from remotemedia.service.calls import run_stream_call
from remotemedia.service.compose import build_service
from remotemedia.service.context import ServiceContext
from remotemedia.service.convert import data_to_wire, manifest_to_wire
from remotemedia.service.seams import NO_SEAMS, Seams
from remotemedia.service.status import lost_input_sequence
from remotemedia.service.streaming import SHUTTING_DOWN
from remotemedia.session import compile_graph, open_session
from remotemedia.session.manager import SessionRejected
from remotemedia.testing.guarantees import violations
from remotemedia.testing.resources import Resources, worker_pids
from remotemedia.testing.seams import FaultSwitch
from remotemedia.testing.trace import CallEnded, Trace, TraceEvent
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import streaming_pb2 as spb

if TYPE_CHECKING:  # the gRPC transport is imported only when a scenario uses it
    from remotemedia.transport.serving import ServerAddress

__all__ = [
    "BYSTANDER_PREFIX",
    "NO_FAULTS",
    "SCENARIO_LIMITS",
    "SCENARIO_WORKERS",
    "Action",
    "ActionKind",
    "Fault",
    "FaultPlan",
    "FaultSwitch",
    "Resources",
    "Scenario",
    "Site",
    "Trace",
    "TraceEvent",
    "Transport",
    "run_scenario",
    "seeded_scheduling",
    "stream_scenario",
    "violations",
    "worker_pids",
]

Transport = Literal["inprocess", "grpc"]
"""How a scenario reaches the runtime: the service over memory channels, or real gRPC."""

BYSTANDER_PREFIX = "bystander-"
"""Node ids of the fault-free session run beside a scenario start with this."""

NO_FAULTS = FaultPlan()
"""The empty plan: what a baseline run installs."""

SCENARIO_LIMITS = Limits(idle_timeout=10.0, max_duration=20.0, init_timeout=20.0)
"""Server limits of scenarios: short, so that a stuck session ends by its limits in time."""

SCENARIO_WORKERS = WorkerConfig(stop_grace=0.5, call_timeout=2.0, start_timeout=20.0)
"""Worker timeouts of scenarios: a hung worker is replaced after 2 s."""

_GRPC_SITES = frozenset({Site.GRPC_RECEIVE, Site.GRPC_SEND})


@attrs.frozen
class Scenario:
    """A named, reproducible run: a pipeline, its inputs, a plan, a transport.

    Attributes:
        name: Its id (what ``-k`` selects and the replay line names).
        manifest: The pipeline, as a manifest document.
        inputs: What the client sends, in order, to the source nodes.
        plan: The faults.
        transport: ``inprocess`` or ``grpc``.
        process_types: Node types run in worker processes.
        limits: The server's limits (short timeouts keep failing scenarios short).
        workers: Worker timeouts.
        deadline: Seconds the scenario may take (the ``deadline`` guarantee).
        bystander: Run a fault-free session beside it.
        registry: Where its node types come from; default: the built-in ones.
    """

    name: str
    manifest: Mapping[str, Any]
    inputs: tuple[RuntimeData, ...]
    plan: FaultPlan = NO_FAULTS
    transport: Transport = "inprocess"
    process_types: frozenset[str] = frozenset()
    limits: Limits = attrs.field(factory=lambda: SCENARIO_LIMITS)
    workers: WorkerConfig = attrs.field(factory=lambda: SCENARIO_WORKERS)
    deadline: float = 40.0
    bystander: bool = True
    registry: NodeRegistry | None = attrs.field(default=None, eq=False)

    async def run(self) -> Trace:
        """Run it (see :func:`run_scenario`)."""
        return await run_scenario(
            self.manifest,
            self.inputs,
            self.plan,
            transport=self.transport,
            name=self.name,
            process_types=self.process_types,
            limits=self.limits,
            workers=self.workers,
            deadline=self.deadline,
            bystander=self.bystander,
            registry=self.registry,
        )


async def run_scenario(
    manifest: Mapping[str, Any],
    inputs: Sequence[RuntimeData],
    plan: FaultPlan | None = NO_FAULTS,
    *,
    transport: Transport = "inprocess",
    name: str = "scenario",
    process_types: Collection[str] = (),
    limits: Limits | None = None,
    workers: WorkerConfig | None = None,
    deadline: float = 40.0,
    bystander: bool = True,
    registry: NodeRegistry | None = None,
    observe: Callable[[Seams], Seams] | None = None,
) -> Trace:
    """Stream ``inputs`` through ``manifest`` with ``plan`` installed; what happened.

    Runs real worker processes for ``process_types`` and, for ``transport="grpc"``,
    the real server on a loopback socket. Plan, then wait: the scenario is cut off
    at ``deadline`` seconds (then its ending is ``timeout``).

    ``plan=None`` runs the service without the kit's seams, exactly as a server
    builds it (no fault can fire, no lifecycle event is noted). ``observe`` is given
    the seams the service is about to be built with and returns those to use (a
    test that watches which paths the runtime takes wraps them).

    Raises:
        FaultPlanError: The plan cannot run here: a fault at a node's site names no
            node (with a bystander), or a gRPC site on the in-process transport.
    """
    scenario = Scenario(
        name,
        manifest,
        tuple(inputs),
        plan or NO_FAULTS,
        transport,
        frozenset(process_types),
        limits or SCENARIO_LIMITS,
        workers or SCENARIO_WORKERS,
        deadline,
        bystander,
        registry,
    )
    _check_plan(scenario)
    before = Resources.take()
    trace = Trace(name, scenario.plan, transport)
    started = time.perf_counter()
    switch = FaultSwitch()
    seams = switch.seams if plan is not None else NO_SEAMS
    if observe is not None:
        seams = observe(seams)
    with switch.install(scenario.plan) as counter, seeded_scheduling(scenario.plan.seed or 0):
        with trio.move_on_after(deadline) as cut:
            async with trio.open_nursery() as nursery:
                if bystander:
                    nursery.start_soon(_run_bystander, scenario, trace)
                await _TRANSPORTS[transport](scenario, seams, trace)
        if cut.cancelled_caught:
            trace.events.append(TraceEvent("end", detail="timeout"))
        trace.events += [TraceEvent("fired", f.node_id, -1, str(f)) for f in counter.fired]
        trace.events += [TraceEvent(kind, node_id) for kind, node_id in counter.events]
    trace.elapsed = time.perf_counter() - started
    trace.leaks = Resources.take().leaked_since(before)
    return trace


@contextlib.contextmanager
def seeded_scheduling(seed: int) -> Iterator[None]:
    """Seed Trio's scheduler for the block, so that runs of one seed interleave alike.

    Trio picks the order of tasks that are ready together at random (to shake out
    order dependence); with Trio's autojump clock and no real I/O, seeding that
    choice makes a run repeat exactly. (Trio keeps the generator in
    ``trio._core._run._r``; its test suite seeds it the same way.)
    """
    generator = trio._core._run._r
    state = generator.getstate()
    generator.seed(seed)
    try:
        yield
    finally:
        generator.setstate(state)


def _check_plan(scenario: Scenario) -> None:
    for fault in scenario.plan.faults:
        if scenario.bystander and fault.site in NODE_SITES and not fault.node_id:
            raise FaultPlanError(
                f"Fault {fault} names no node: it would hit the bystander session too; "
                "give it a node_id."
            )
        grpc_only = fault.site in _GRPC_SITES or fault.action.kind is ActionKind.SIGTERM_SERVER
        if grpc_only and scenario.transport != "grpc":
            raise FaultPlanError(f"Fault {fault} needs the gRPC transport (transport='grpc').")


# --------------------------------------------------------------------------- the client side


class _Wire(Protocol):
    """One StreamPipeline call, seen from the client."""

    async def send(self, request: spb.StreamRequest) -> None: ...

    async def recv(self) -> spb.StreamResponse | None:
        """The next response; None at the end. Raises :class:`CallEnded` for a status or reset."""


async def _converse(scenario: Scenario, wire: _Wire, trace: Trace) -> None:
    """Open the session, send every input and CLOSE, read until the stream ends."""
    manifest = manifest_to_wire(manifest_from_dict(dict(scenario.manifest)))
    init = spb.StreamInit(client_version="v1", manifest=manifest)
    ready = trio.Event()

    async def send() -> None:
        # A send that finds the call over waits here; the reader sees how it ended.
        await wire.send(spb.StreamRequest(init=init))
        await ready.wait()
        for sequence, data in enumerate(scenario.inputs):
            chunk = spb.DataChunk(buffer=data_to_wire(data), sequence=sequence)
            await wire.send(spb.StreamRequest(data_chunk=chunk))
            trace.sent = sequence + 1
        close = spb.StreamControl(command=spb.StreamControl.COMMAND_CLOSE)
        await wire.send(spb.StreamRequest(control=close))
        await trio.sleep_forever()  # the reader ends the conversation

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        try:
            while (response := await wire.recv()) is not None:
                if response.WhichOneof("response") == "ready":
                    ready.set()
                elif _record(response, trace):
                    break
            else:
                trace.events.append(TraceEvent("end", detail="eof"))
        except CallEnded as ending:
            trace.events.append(TraceEvent("end", detail=ending.ending))
            trace.messages.append(str(ending))
        nursery.cancel_scope.cancel()


def _record(response: spb.StreamResponse, trace: Trace) -> bool:
    """Add a response to the trace; whether it ended the stream."""
    kind = response.WhichOneof("response")
    if kind == "result":
        outputs = response.result.data_outputs
        if "_status" not in outputs:
            for node_id, buffer in sorted(outputs.items()):
                trace.events.append(
                    TraceEvent("result", node_id, response.result.sequence, _value(buffer))
                )
        return False
    if kind == "error":
        error = response.error
        error_type = pb.ErrorType.Name(error.error_type)
        trace.messages.append(error.message)
        sequence = lost_input_sequence(error)
        if sequence is not None:
            trace.events.append(TraceEvent("lost", error.failing_node_id, sequence, error_type))
            return False
        fatal = _fatal_sequence(error.context)
        trace.events.append(TraceEvent("error", error.failing_node_id, fatal, error_type))
        trace.events.append(TraceEvent("end", detail=f"error:{error_type}"))
        return True
    if kind == "closed":
        # A drain's closed is its own ending: the inputs it did not take get nothing.
        drained = response.closed.reason.startswith(SHUTTING_DOWN)
        trace.events.append(TraceEvent("end", detail="closed:drained" if drained else "closed"))
        return True
    return False  # ready, metrics


def _fatal_sequence(context: str) -> int:
    prefix = "input sequence "
    tail = context[len(prefix) :] if context.startswith(prefix) else ""
    return int(tail) if tail.isdigit() else -1


def _value(buffer: pb.DataBuffer) -> str:
    """A result's value for the trace: its text, or a digest of its bytes."""
    if buffer.WhichOneof("data_type") == "text":
        return "text:" + buffer.text.text_data.decode("utf-8", "replace")
    raw = buffer.SerializeToString(deterministic=True)
    return f"{buffer.WhichOneof('data_type')}:{hashlib.sha256(raw).hexdigest()[:12]}"


# --------------------------------------------------------------------------- transports


def _config(scenario: Scenario) -> ServerConfig:
    """The configuration of a scenario's server (the in-process one's too)."""
    return ServerConfig(
        bind="127.0.0.1:0",
        limits=scenario.limits,
        drain_timeout=2.0,
        executors=dict.fromkeys(scenario.process_types, "process"),
        workers=scenario.workers,
    )


def _service(scenario: Scenario, seams: Seams | None = None) -> ServiceContext:
    """The service of a scenario, built as a server builds its own."""
    if seams is None:
        return build_service(_config(scenario), scenario.registry or builtin_registry())
    return build_service(_config(scenario), scenario.registry or builtin_registry(), seams)


class _MemoryWire:
    """The client's end of an in-process call, over memory channels (no sockets, no gRPC)."""

    def __init__(
        self,
        requests: trio.MemorySendChannel[bytes],
        responses: trio.MemoryReceiveChannel[bytes],
    ) -> None:
        self.requests = requests
        self.responses = responses
        self.refused: SessionRejected | None = None

    async def send(self, request: spb.StreamRequest) -> None:
        try:
            await self.requests.send(request.SerializeToString())
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await trio.sleep_forever()  # the session ended; the reader sees why

    async def recv(self) -> spb.StreamResponse | None:
        try:
            data = await self.responses.receive()
        except trio.EndOfChannel:
            if self.refused is not None:
                raise CallEnded("status:RESOURCE_EXHAUSTED", str(self.refused)) from None
            return None
        return spb.StreamResponse.FromString(data)


class _ServiceEnd:
    """The service's end of an in-process call: a :class:`~remotemedia.service.wire.Wire`.

    The call runner serves it as it serves a gRPC or WebSocket call.
    """

    def __init__(
        self,
        requests: trio.MemoryReceiveChannel[bytes],
        responses: trio.MemorySendChannel[bytes],
    ) -> None:
        self.requests = requests
        self.responses = responses
        self.deliver: Callable[[bytes], bool] | None = None  # (the runner reads)

    async def receive(self) -> bytes | None:
        try:
            return await self.requests.receive()
        except trio.EndOfChannel:
            return None

    def send_now(self, data: bytes) -> bool:
        try:
            self.responses.send_nowait(data)
        except trio.WouldBlock:
            return False
        return True

    async def send(self, data: bytes) -> None:
        await self.responses.send(data)

    def abort(self) -> None:
        self.requests.close()
        self.responses.close()


async def _inprocess(scenario: Scenario, seams: Seams, trace: Trace) -> None:
    context = _service(scenario, seams)
    requests_send, requests_receive = trio.open_memory_channel[bytes](8)
    responses_send, responses_receive = trio.open_memory_channel[bytes](8)
    wire = _MemoryWire(requests_send, responses_receive)

    async def serve() -> None:
        try:
            await run_stream_call(_ServiceEnd(requests_receive, responses_send), context)
        except SessionRejected as refused:
            wire.refused = refused
        finally:
            responses_send.close()
            requests_receive.close()

    async with trio.open_nursery() as nursery, requests_send, responses_receive:
        nursery.start_soon(serve)
        await _converse(scenario, wire, trace)
        await requests_send.aclose()  # the client half-closes after its session ended


async def stream_scenario(address: ServerAddress, scenario: Scenario, switch: FaultSwitch) -> Trace:
    """Stream ``scenario`` to a server running in this process, with its plan installed.

    For long runs against one server (the soak), built with ``switch.seams``: no
    bystander, no leak check (the caller samples resources itself); the scenario's
    transport, limits and workers are the server's.
    """
    from remotemedia.testing._grpc_wire import grpc_wire

    trace = Trace(scenario.name, scenario.plan, "grpc")
    started = time.perf_counter()
    with switch.install(scenario.plan) as counter:
        with trio.move_on_after(scenario.deadline) as cut:
            async with grpc_wire(address) as wire:
                await _converse(scenario, wire, trace)
        if cut.cancelled_caught:
            trace.events.append(TraceEvent("end", detail="timeout"))
        trace.events += [TraceEvent("fired", f.node_id, -1, str(f)) for f in counter.fired]
        trace.events += [TraceEvent(kind, node_id) for kind, node_id in counter.events]
    trace.elapsed = time.perf_counter() - started
    return trace


async def _grpc(scenario: Scenario, seams: Seams, trace: Trace) -> None:
    # Imported here: the grpc transport pulls in grpclib and trio-asyncio.
    from remotemedia.testing._grpc_wire import grpc_wire, serving

    config = _config(scenario)
    async with serving(config, scenario.registry, seams) as address, grpc_wire(address) as wire:
        await _converse(scenario, wire, trace)


_TRANSPORTS = {"inprocess": _inprocess, "grpc": _grpc}


# --------------------------------------------------------------------------- the bystander


def _prefixed(manifest: Mapping[str, Any]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(json.dumps(dict(manifest)))
    for node in document["nodes"]:
        node["id"] = BYSTANDER_PREFIX + node["id"]
    for connection in document.get("connections", []):
        connection["from"] = BYSTANDER_PREFIX + connection["from"]
        connection["to"] = BYSTANDER_PREFIX + connection["to"]
    return document


async def _run_bystander(scenario: Scenario, trace: Trace) -> None:
    """A fault-free session beside the scenario: same pipeline, same process."""
    service = _service(scenario)  # no seams: it suffers no fault
    registry = service.registry
    graph = compile_graph(manifest_from_dict(_prefixed(scenario.manifest)), registry)
    events: list[TraceEvent] = []
    try:
        async with (
            open_session(
                graph, registry, executors=service.executors, workers=service.workers
            ) as session,
            trio.open_nursery() as nursery,
        ):

            async def feed() -> None:
                for data in scenario.inputs:
                    await session.send(data)
                await session.send_eof()

            nursery.start_soon(feed)
            async for result in session:
                node_id = result.node_id.removeprefix(BYSTANDER_PREFIX)
                if result.error is not None:
                    events.append(TraceEvent("lost", node_id, result.sequence))
                    trace.messages.append(f"bystander: {result.error}")
                else:
                    assert result.data is not None
                    value = _value(data_to_wire(result.data))
                    events.append(TraceEvent("result", node_id, result.sequence, value))
    except RemoteMediaError as error:
        events.append(TraceEvent("error", getattr(error, "node_id", ""), -1, type(error).__name__))
        trace.messages.append(f"bystander: {error}")
    trace.bystander = events
