"""The fault kit's seams: wrappers around the runtime's real objects that inject faults.

:func:`fault_seams` turns a :class:`~remotemedia.faults.FaultCounter` into the
:class:`~remotemedia.service.seams.Seams` a server is built with. Each wrapper has
the methods of the object it wraps and, while no fault is due, calls that object's
own method and nothing else, so the runtime takes the same paths with and without
a plan (its fast paths included); only a fault that fires changes what happens:

- :class:`FaultyNode` wraps an in-process node: its initialize, process, flush and
  cleanup meet the node sites first (raise, hang, delay).
- :class:`FaultyLink` wraps the runtime's end of a worker
  (:class:`~remotemedia.executors.link.WorkerLink`): the config and input frames it
  sends, the events and output frames it receives, and the worker-side node sites,
  which it hands to the worker as ``Inject`` events (the runtime counts, so
  occurrences count across worker restarts; the worker suffers).
- :class:`FaultyWire` wraps a call's connection to its client at any edge: the
  requests it receives and the responses it sends meet the gRPC sites.
- Admission waits, raises or SIGTERMs before a session is admitted.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, TypeAlias

import trio

from remotemedia.errors import LinkProtocolError
from remotemedia.executors import injection
from remotemedia.executors.link import NOTHING, Output, WorkerLink
from remotemedia.executors.process import ProcessNode
from remotemedia.faults import Action, ActionKind, FaultCounter, FaultPlan, FaultPlanError, Site
from remotemedia.ipc.control import Config, Credit, Inject, InputReady, LinkEvent, OutputReady
from remotemedia.media import RuntimeData
from remotemedia.nodes import Node
from remotemedia.service.seams import Seams
from remotemedia.service.wire import Wire

__all__ = ["FaultSwitch", "FaultyLink", "FaultyNode", "FaultyWire", "WireWrapper", "fault_seams"]

NO_PLAN = FaultPlan()


class FaultSwitch:
    """The plan a server's seams carry out, changed between scenarios.

    A scenario's server is built with :attr:`seams`; each scenario runs inside
    :meth:`install`, so one long-running server (the soak's) serves a plan per
    session. Between scenarios the plan is empty.
    """

    def __init__(self) -> None:
        self.counter: FaultCounter = FaultCounter(NO_PLAN)
        self.installed = False
        self.seams = fault_seams(self)

    @contextlib.contextmanager
    def install(self, plan: FaultPlan) -> Iterator[FaultCounter]:
        """Carry out ``plan`` for the duration of the block.

        Raises:
            FaultPlanError: A plan is installed already; install one at a time.
        """
        if self.installed:
            raise FaultPlanError("A fault plan is installed already; install one at a time.")
        counter = self.counter = FaultCounter(plan)
        self.installed = True
        try:
            yield counter
        finally:
            self.counter = FaultCounter(NO_PLAN)
            self.installed = False

    def reached(self, site: Site, node_id: str = "") -> Action | None:
        """:meth:`FaultCounter.reached` of the plan installed now."""
        return self.counter.reached(site, node_id)

    @property
    def events(self) -> list[tuple[str, str]]:
        """The lifecycle events noted under the plan installed now."""
        return self.counter.events


Plan: TypeAlias = FaultCounter | FaultSwitch
"""What the seams ask at each site: a plan's counter, or the switch holding one."""


def fault_seams(counter: Plan) -> Seams:
    """The seams that carry out ``counter``'s plan (and note its lifecycle events)."""

    def node(real: Node[Any]) -> Node[Any]:
        # A node in a worker meets its sites inside the worker, through its link.
        return real if isinstance(real, ProcessNode) else FaultyNode.around(real, counter)

    def link(real: WorkerLink, node_id: str, kill: Callable[[], Awaitable[None]]) -> WorkerLink:
        return FaultyLink(real, node_id, kill, counter)

    async def admission() -> None:
        action = counter.reached(Site.ADMISSION)
        if action is not None:
            await injection.perform(action, "a new session's admission")

    def on_event(event: str, node_id: str) -> None:
        counter.events.append((event, node_id))

    def wire(real: Wire) -> Wire:
        return FaultyWire(real, counter)

    return Seams(node=node, link=link, wire=wire, admission=admission, on_event=on_event)


class FaultyNode:
    """An in-process node whose calls meet the node sites first.

    Everything else (attributes the session sets, ``count``, ``run``) is the real
    node's. Use :meth:`around`: it picks the subclass whose ``process`` has the real
    one's shape (a plain function becomes a coroutine, which can wait; the session
    runs coroutines and plain functions alike).
    """

    def __init__(self, real: Node[Any], counter: Plan) -> None:
        object.__setattr__(self, "real", real)
        object.__setattr__(self, "counter", counter)

    @staticmethod
    def around(real: Node[Any], counter: Plan) -> Node[Any]:
        """``real`` wrapped, with a ``process`` of its shape."""
        if real.is_duplex():
            cls: type[FaultyNode] = FaultyNode
        elif inspect.isasyncgenfunction(real.process):
            cls = _FaultyGenerator
        else:
            cls = _FaultyCall
        wrapped: Node[Any] = cls(real, counter)  # type: ignore[assignment]
        return wrapped

    real: Node[Any]
    counter: Plan

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.real, name, value)

    async def reach(self, site: Site) -> None:
        """Meet ``site``: carry out the fault due there, if any."""
        action = self.counter.reached(site, self.real.node_id)
        if action is not None:
            await injection.perform(action, f"{site.value} of node '{self.real.node_id}'")

    async def initialize(self) -> None:
        """The node's initialize, after its site."""
        await self.reach(Site.NODE_INITIALIZE)
        await self.real.initialize()

    async def flush(self) -> Any:
        """The node's flush, after its site."""
        await self.reach(Site.NODE_FLUSH)
        output: Any = self.real.flush()
        return await output if inspect.isawaitable(output) else output

    async def cleanup(self) -> None:
        """The node's cleanup, after its site."""
        await self.reach(Site.NODE_CLEANUP)
        await self.real.cleanup()


class _FaultyCall(FaultyNode):
    async def process(self, data: RuntimeData) -> Any:
        """The node's process (plain or a coroutine), after its site."""
        await self.reach(Site.NODE_PROCESS)
        output: Any = self.real.process(data)
        return await output if inspect.isawaitable(output) else output


class _FaultyGenerator(FaultyNode):
    async def process(self, data: RuntimeData) -> AsyncIterator[Any]:
        """The node's process (an async generator), after its site."""
        await self.reach(Site.NODE_PROCESS)
        generator: Any = self.real.process(data)
        async with contextlib.aclosing(generator) as items:
            async for item in items:
                yield item


class FaultyLink(WorkerLink):
    """A worker's link whose traffic meets the link, doorbell and shared-memory sites.

    Args:
        real: The link to wrap.
        node_id: The node the worker runs (node sites count per node).
        kill: SIGKILLs the worker and waits until it is gone.
        counter: The plan being carried out.
    """

    def __init__(
        self,
        real: WorkerLink,
        node_id: str,
        kill: Callable[[], Awaitable[None]],
        counter: Plan,
    ) -> None:
        # Not the base's __init__: every method below works through ``real``.
        self.real = real
        self.node_id = node_id
        self.kill = kill
        self.counter = counter
        self._held: tuple[LinkEvent, Action] | None = None  # a buffered event with a fault due

    # -- what the runtime sends -------------------------------------------------------

    def due(self, site: Site) -> Action | None:
        """The fault due at ``site`` now (counting this time), if any."""
        return self.counter.reached(site, self.node_id)

    def injection(self, site: Site) -> bytes:
        """The Inject event for a worker-side node site's fault due now, or b""."""
        action = self.due(site)
        return b"" if action is None else self.real.encode(Inject(site.value, action.to_json()))

    async def send_config(self, config: Config) -> None:
        """The config, meeting the link's send site and the worker's initialize site."""
        sending = self.due(Site.LINK_SEND)
        inject = self.injection(Site.NODE_INITIALIZE)
        if sending is None and not inject:
            await self.real.send_config(config)
            return
        message = await self._outgoing(sending, self.real.encode(config))
        await self.real.send(inject + message)

    async def send_input(self, parts: Sequence[bytes | memoryview], *, flush: bool) -> None:
        """An input, meeting the publish, doorbell and the worker's process (flush) sites."""
        publishing = self.due(Site.SHM_PUBLISH)
        ringing = self.due(Site.DOORBELL_SEND)
        inject = self.injection(Site.NODE_FLUSH if flush else Site.NODE_PROCESS)
        if publishing is None and ringing is None and not inject:
            await self.real.send_input(parts, flush=flush)
            return
        real = self.real
        frame = await self._outgoing(publishing, b"".join(parts))
        doorbell = await self._outgoing(ringing, real.encode(InputReady()))
        if frame:
            real.inputs.publish(frame)
        real.send_now(real.encode(Credit()) * real.owed_credits + inject + doorbell)
        real.owed_credits = 0

    async def _outgoing(self, action: Action | None, data: bytes) -> bytes:
        """What goes out under ``action``: flipped, nothing, later, or as the worker dies."""
        if action is None:
            return data
        if action.kind is ActionKind.CORRUPT:
            return injection.corrupted(data)
        if action.kind is ActionKind.DROP:
            return b""
        if action.kind is ActionKind.DELAY:
            await trio.sleep(action.delay_ms / 1000)
        elif action.kind is ActionKind.CLOSE_LINK:
            self.real.shutdown_write()
        else:  # SIGKILL, EXIT
            await self.kill()
        return data

    async def before_cleanup(self) -> None:
        """Hand the worker its cleanup site's fault, if one is due."""
        inject = self.injection(Site.NODE_CLEANUP)
        if inject:
            with contextlib.suppress(OSError):  # a dead worker suffers nothing more
                self.real.send_now(inject)
        await self.real.before_cleanup()

    # -- what the runtime receives ----------------------------------------------------

    def buffered_event(self) -> LinkEvent | None:
        """A buffered event past its site (one whose fault waits: held for next_event)."""
        while (event := self.real.buffered_event()) is not None:
            action = self.due(_site_of(event))
            if action is None:
                return event
            if action.kind is ActionKind.DROP:
                continue
            if action.kind is ActionKind.CORRUPT:
                raise LinkProtocolError(f"Injected corrupt bytes in place of {event}.")
            # The rest waits (or ends the link): the runtime's wait carries it out.
            self._held = (event, action)
            return None
        return None

    async def next_event(self) -> LinkEvent | None:
        """The next event past its site (a held one first)."""
        while True:
            if self._held is not None:
                (event, action), self._held = self._held, None
            else:
                received = await self.real.next_event()
                if received is None:
                    return None
                event, due = received, self.due(_site_of(received))
                if due is None:
                    return event
                action = due
            # Faults on the link count events, not reads: reads split by timing.
            if action.kind is ActionKind.DROP:
                continue
            if action.kind is ActionKind.CLOSE_LINK:
                return None
            if action.kind is ActionKind.CORRUPT:
                raise LinkProtocolError(f"Injected corrupt bytes in place of {event}.")
            if action.kind is ActionKind.DELAY:
                await trio.sleep(action.delay_ms / 1000)
            else:  # SIGKILL, EXIT
                await self.kill()
            return event

    async def receive_output(self) -> Output:
        """The next output frame past the shared-memory receive site."""
        action = self.due(Site.SHM_RECEIVE)
        if action is None:
            return await self.real.receive_output()
        if action.kind is ActionKind.DELAY:
            await trio.sleep(action.delay_ms / 1000)
        elif action.kind in (ActionKind.SIGKILL, ActionKind.EXIT):
            await self.kill()  # the worker dies; this frame still arrived
        elif action.kind is ActionKind.DROP:
            self.real.decode_output(_same)
            return NOTHING
        if action.kind is ActionKind.CORRUPT:
            return self.real.decode_output(lambda raw: injection.corrupted(bytes(raw)))
        return self.real.decode_output(_same)

    # -- the rest is the real link's --------------------------------------------------

    def encode(self, event: LinkEvent) -> bytes:
        """The real link's."""
        return self.real.encode(event)

    async def send(self, data: bytes) -> None:
        """The real link's."""
        await self.real.send(data)

    def send_now(self, data: bytes) -> None:
        """The real link's."""
        self.real.send_now(data)

    def credit(self, batch: int) -> None:
        """The real link's."""
        self.real.credit(batch)

    def ask_stop(self) -> None:
        """The real link's."""
        self.real.ask_stop()

    def decode_output(self, transform: Callable[[memoryview], bytes | memoryview]) -> Output:
        """The real link's."""
        return self.real.decode_output(transform)

    def drain_outputs(self) -> None:
        """The real link's."""
        self.real.drain_outputs()

    def shutdown_write(self) -> None:
        """The real link's."""
        self.real.shutdown_write()

    def close(self) -> None:
        """The real link's."""
        self.real.close()


def _site_of(event: LinkEvent) -> Site:
    # The doorbell of an output is its own seam; every other event is the link's.
    return Site.DOORBELL_RECEIVE if isinstance(event, OutputReady) else Site.LINK_RECEIVE


def _same(raw: memoryview) -> memoryview:
    return raw


class WireWrapper:
    """A call's wire around another: the real one's methods, and its fast path routed.

    The runner sets :attr:`deliver` on the outermost wire; the edge calls it on the
    real one. A wrapper sees each request handed over that way in :meth:`delivering`
    (by default: passed on to the runner); its other methods are the real wire's.
    Subclasses override what they watch or change.
    """

    def __init__(self, real: Wire) -> None:
        self.real = real
        self._deliver: Callable[[bytes], bool] | None = None

    @property
    def deliver(self) -> Callable[[bytes], bool] | None:
        """The runner's fast path; the edge's goes through :meth:`delivering` first."""
        return self._deliver

    @deliver.setter
    def deliver(self, deliver: Callable[[bytes], bool] | None) -> None:
        self._deliver = deliver
        self.real.deliver = None if deliver is None else self.delivering

    def delivering(self, data: bytes) -> bool:
        """A request the edge hands over at once: whether the runner took it."""
        assert self._deliver is not None
        return self._deliver(data)

    async def receive(self) -> bytes | None:
        """The real wire's."""
        return await self.real.receive()

    def send_now(self, data: bytes) -> bool:
        """The real wire's."""
        return self.real.send_now(data)

    async def send(self, data: bytes) -> None:
        """The real wire's."""
        await self.real.send(data)

    def abort(self) -> None:
        """The real wire's."""
        self.real.abort()


class FaultyWire(WireWrapper):
    """A call's wire whose requests and responses meet the gRPC sites.

    What each action does at this seam:

    - ``delay``: hold the message that long.
    - ``disconnect``: drop the client's connection (the session sees its client go).
    - ``corrupt`` (receive): the message's bytes are flipped; what does not decode is
      the client's INVALID_ARGUMENT.
    - ``stall`` (send): never write this or any later response, as a client that stops
      reading leaves a server (the session must end by its limits).
    - ``sigterm_server``: SIGTERM this process; the server drains as on a real one.

    A fault due when the edge hands a request over at once (``deliver``) or writes a
    response at once (``send_now``) is carried out on the waiting path instead: the
    fast path declines, the message takes the path it takes when the edge is busy,
    and the site is not counted twice.
    """

    def __init__(self, real: Wire, counter: Plan) -> None:
        super().__init__(real)
        self.counter = counter
        self._receiving: Action | None = None  # due at the request the edge holds
        self._sending: Action | None = None  # due at the response the writer sends next
        self._counted = False  # the writer's next response met its site already
        self._stalled = False

    def delivering(self, data: bytes) -> bool:
        """A request handed over at once, past the receive site (one with a fault waits)."""
        if self._receiving is not None:
            return False  # (rule 1 of the runner: nothing overtakes a held request)
        action = self.counter.reached(Site.GRPC_RECEIVE)
        if action is None:
            return super().delivering(data)
        self._receiving = action  # carried out when the runner receives it
        return False

    async def receive(self) -> bytes | None:
        """The next request, past the receive site."""
        data = await self.real.receive()
        if data is None:
            return None
        action = self._receiving
        if action is None:
            action = self.counter.reached(Site.GRPC_RECEIVE)
        if action is None:
            return data
        try:  # (held: later requests must not overtake this one meanwhile)
            self._receiving = action
            if action.kind is ActionKind.CORRUPT:
                return injection.corrupted(data)
            await self._perform(action)
            return data
        finally:
            self._receiving = None

    def send_now(self, data: bytes) -> bool:
        """A response at once, past the send site; one with a fault due waits."""
        if self._stalled:
            return False
        action = self.counter.reached(Site.GRPC_SEND)
        if action is not None:
            self._sending = action
            return False
        if self.real.send_now(data):
            return True
        self._counted = True
        return False

    async def send(self, data: bytes) -> None:
        """A response, past the send site."""
        action, self._sending = self._sending, None
        if action is None and not self._counted:
            action = self.counter.reached(Site.GRPC_SEND)
        self._counted = False
        if action is not None:
            if action.kind is ActionKind.STALL:
                self._stalled = True
                await trio.sleep_forever()
            await self._perform(action)
        await self.real.send(data)

    async def _perform(self, action: Action) -> None:
        if action.kind is ActionKind.DELAY:
            await trio.sleep(action.delay_ms / 1000)
        elif action.kind is ActionKind.DISCONNECT:
            self.real.abort()
        elif action.kind is ActionKind.SIGTERM_SERVER:
            injection.sigterm_server()
