"""The worker process: runs one node, fed frames through shared memory.

Started by :mod:`remotemedia.executors.process` as
``python -m remotemedia.executors.worker <control-fd>``. Everything else, the node's
params included, arrives over the control socket (never argv). The worker:

1. dies with its parent (``PR_SET_PDEATHSIG``) and exits when the control socket
   closes, so it never outlives the runtime;
2. reads one ``config`` message, builds and initialises the node (loading models),
   and only then answers ``ready`` ("ready" means the model is loaded);
3. for every ``I`` doorbell, takes one input frame, processes it (audio read in
   place from shared memory, see :meth:`_Worker.handle_leased`), publishes each
   output (waiting for a ``C`` credit whenever its credits run out) and finally an
   EndOfInput or Error frame, ringing ``O`` after each; an ``S`` (stop) cancels the
   node's work on the input in flight, which then ends with the outputs sent so far;
4. reads the socket in one task (:meth:`_Worker.read_link`), which Trio wakes
   (``wait_readable``) as bytes arrive, while the node works: no polling anywhere.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import inspect
import signal
import socket
import sys
import time
import traceback
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from remotemedia.errors import RemoteMediaError
from remotemedia.executors import injection
from remotemedia.executors.child import die_with_parent
from remotemedia.faults import Action, Site
from remotemedia.ipc.codec import (
    decode_data,
    decode_frame,
    encode_data_parts,
    encode_end,
    encode_error,
)
from remotemedia.ipc.control import (
    Config,
    Count,
    Credit,
    Fatal,
    Inject,
    InputReady,
    LinkEvent,
    LinkProtocol,
    OutputReady,
    Progress,
    Ready,
    Side,
    Stop,
)
from remotemedia.ipc.shm import BUFFER, Lease, ShmNamespace, ShmPort
from remotemedia.media import Audio, RuntimeData
from remotemedia.nodes import Node
from remotemedia.params import structure_params

__all__ = ["main"]


def _borrowed(data: RuntimeData | None) -> weakref.ref[Any] | None:
    """A weak reference that lives exactly as long as some view of ``data``'s samples.

    A view of the frame's memory, however derived (a slice, a reshape, a
    memoryview), keeps the object behind the samples array alive: once the
    reference is dead, nothing can read the shared memory any more.
    """
    if isinstance(data, Audio) and data.samples.base is not None:
        return weakref.ref(data.samples.base)
    return None


def _load_class(path: str) -> type[Node[Any]]:
    module_name, _, qualname = path.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target  # type: ignore[no-any-return]


class _Worker:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.link = LinkProtocol(Side.WORKER)
        self.credits = BUFFER
        self.pending_inputs = 0
        self.unrung = 0  # outputs published whose doorbell is not rung yet
        self.config: Config | None = None
        self.eof = False  # the runtime closed the socket: time to go
        self._arrived = trio.Event()  # set (and replaced) whenever events arrive
        # The node's work on the input in flight, which a Stop cancels.
        self.stoppable: trio.CancelScope | None = None
        # Inputs are read in place until the node is seen keeping one (handle_leased).
        self.copy_inputs = False
        # Faults the runtime sent for this worker's node to suffer, by site.
        self.injected: dict[Site, Action] = {}
        # The node's counts as last reported to the runtime (it counts in any thread).
        self.reported: collections.Counter[str] = collections.Counter()

    def report_counts(self, node: Node[Any]) -> None:
        """Send the runtime what the node counted since the last report (for its metrics).

        Sent from this (Trio's) thread once an input is done, before its outputs'
        end: a node may count from a worker thread, which must not write the socket.
        """
        for event, total in list(node.counts.items()):
            if (amount := total - self.reported[event]) > 0:
                self.send(Count(event, amount))
                self.reported[event] = total

    async def read_link(self) -> None:
        """The socket's only reader: apply the runtime's events as they arrive.

        Runs beside the node's work, so that a Stop reaches it mid-input.

        Raises:
            LinkProtocolError: The runtime sent garbage (the worker exits).
        """
        while not self.eof:
            await trio.lowlevel.wait_readable(self.sock)
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""  # the runtime is gone, as at end of file
            if data:
                self.link.receive_data(data)
                for event in self.link.events():
                    self.apply(event)
            else:
                self.eof = True
            self._arrived.set()
            self._arrived = trio.Event()

    def apply(self, event: LinkEvent) -> None:
        if isinstance(event, Credit):
            self.credits += 1
        elif isinstance(event, InputReady):
            self.pending_inputs += 1
        elif isinstance(event, Stop):
            if self.stoppable is not None:
                self.stoppable.cancel()
        elif isinstance(event, Inject):
            self.inject(event)
        elif isinstance(event, Config) and self.config is None:
            self.config = event
        # A second Config: nothing to do with it mid-run.

    async def until(self, ready: Callable[[], bool]) -> bool:
        """Wait until ``ready()`` (True) or the runtime closed the socket (False)."""
        while not ready():
            if self.eof:
                return False
            await self._arrived.wait()
        return True

    def send(self, event: LinkEvent) -> None:
        self.sock.sendall(self.link.encode(event))

    async def emit(
        self, port: ShmPort, frame: bytes | list[bytes | memoryview], *, ring: bool = True
    ) -> bool:
        """Publish one output frame; ring its doorbell now, or with the next ring.

        Frames published together (a node's list of outputs and the EndOfInput after
        them) share one send, so the runtime wakes once for all of them.
        """
        if self.credits <= 0:
            self.ring()  # the runtime pays credits for frames it has heard of only
            if not await self.until(lambda: self.credits > 0):
                return False
        port.publish(frame)
        self.credits -= 1
        self.unrung += 1
        if ring:
            self.ring()
        return True

    def ring(self) -> None:
        """Ring the doorbell once for every output published since the last ring."""
        if self.unrung:
            self.sock.sendall(self.link.encode(OutputReady()) * self.unrung)
            self.unrung = 0

    async def run(self) -> int:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.read_link)
            status = await self.serve()
            nursery.cancel_scope.cancel()
        return status

    async def serve(self) -> int:
        # Faults for initialize come before the config, and are kept by apply().
        if not await self.until(lambda: self.config is not None):
            return 2
        config = self.config
        assert config is not None
        namespace = ShmNamespace(config.prefix, Path(config.root))
        iox_node = namespace.node(config.iox_node)
        inputs = ShmPort(iox_node, config.input, publish=False)
        outputs = ShmPort(iox_node, config.output, publish=True)
        session_id = config.session_id
        try:
            node = await self.build(config)
        except Exception as exc:  # reported to the runtime, which raises NodeError
            self.send(Fatal(_describe(exc)))
            return 1
        self.send(Ready())
        try:
            while True:
                if not await self.until(lambda: self.pending_inputs > 0):
                    return 0
                self.pending_inputs -= 1
                lease = inputs.take()
                if lease is None:
                    continue  # a wake-up with no sample behind it
                if not await self.handle_leased(node, lease, outputs, session_id):
                    return 0
        finally:
            await self.suffer(Site.NODE_CLEANUP, node.node_id)
            await node.cleanup()

    def inject(self, event: Inject) -> None:
        """Keep a fault the runtime sent until the node reaches its site."""
        self.injected[Site(event.site)] = Action.from_json(event.action)

    async def suffer(self, site: Site, node_id: str) -> None:
        """Carry out the fault injected for ``site``, if any (usually: nothing)."""
        if self.injected:
            action = self.injected.pop(site, None)
            if action is not None:
                await injection.perform(action, f"{site.value} of node '{node_id}'", in_worker=True)

    async def build(self, config: Config) -> Node[Any]:
        cls = _load_class(config.node_class)
        params, problems = structure_params(cls.Params, config.params, "params")
        if problems:
            raise ValueError("; ".join(str(p) for p in problems))
        node = cls(config.node_id, params)

        async def progress(message: str) -> None:
            self.send(Progress(message))

        node.progress = progress
        await self.suffer(Site.NODE_INITIALIZE, node.node_id)
        await node.initialize()
        return node

    async def handle_leased(
        self, node: Node[Any], lease: Lease, outputs: ShmPort, session_id: str
    ) -> bool:
        """Process the input held by ``lease``, reading its samples in place if allowed.

        The node gets a read-only view of the shared memory (no copy) while it has
        kept no earlier input: a node that still holds a view once ``process()`` is
        done (an accumulator, say) keeps that frame's sample until it lets go, and
        gets copies from then on, so at most two samples are ever held at once.
        """
        try:
            data = decode_data(decode_frame(lease.view), copy=self.copy_inputs)
        except BaseException:
            lease.release()
            raise
        guard = None if self.copy_inputs else _borrowed(data)
        try:
            return await self.handle(node, data, outputs, session_id)
        finally:
            del data
            if guard is None or (kept := guard()) is None:
                lease.release()
            else:  # the node holds a view: the sample goes back with its last view
                weakref.finalize(kept, lease.release).atexit = False
                self.copy_inputs = True
                del kept

    async def handle(
        self, node: Node[Any], data: RuntimeData | None, outputs: ShmPort, session_id: str
    ) -> bool:
        sent = 0
        started_ns = time.time_ns()
        try:
            with trio.CancelScope() as self.stoppable:
                site = Site.NODE_PROCESS if data is not None else Site.NODE_FLUSH
                await self.suffer(site, node.node_id)
                # An EndOfInput frame as input means end of input: flush the node.
                result: Any = node.process(data) if data is not None else node.flush()
                if inspect.isasyncgen(result):
                    async with contextlib.aclosing(result) as stream:
                        item: Any
                        async for item in stream:
                            if not await self.emit(outputs, encode_data_parts(item, session_id)):
                                return False
                            sent += 1
                    result = None
                elif inspect.isawaitable(result):
                    result = await result
                items = result if isinstance(result, list | tuple) else [result]
                for item in items:
                    if item is not None:
                        # Rung together with the EndOfInput below: one wake-up per input.
                        if not await self.emit(
                            outputs, encode_data_parts(item, session_id), ring=False
                        ):
                            return False
                        sent += 1
        except Exception as exc:
            last = encode_error(_describe(exc), type(exc).__name__, session_id)
        else:
            # Also when stopped: what was sent stands, the rest was not wanted.
            last = encode_end(sent, session_id, worked_ns=(started_ns, time.time_ns()))
        finally:
            self.stoppable = None
        if self.eof:
            return False
        if node.counts:  # before the input's last frame, so the runtime has them with it
            self.report_counts(node)
        return await self.emit(outputs, last)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, RemoteMediaError | ValueError | TypeError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


def main() -> int:
    """Entry point: ``python -m remotemedia.executors.worker <control-fd>``."""
    # Off Linux, the control socket's EOF still ends the worker.
    die_with_parent(signal.SIGKILL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runtime decides when we stop
    sock = socket.socket(fileno=int(sys.argv[1]))
    sock.setblocking(False)
    try:
        return trio.run(_Worker(sock).run)
    except (BrokenPipeError, ConnectionResetError):
        return 0  # the runtime closed our socket mid-reply: it no longer wants us
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
