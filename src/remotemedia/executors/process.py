"""Running a node in a worker process, behind the ordinary node interface.

:class:`ProcessNode` stands in for the real node in a session: ``initialize()``
starts the worker and waits until it reports the model loaded, ``process()`` hands
the input over through shared memory and yields the worker's outputs until its
EndOfInput (or Error) frame, and ``cleanup()`` stops the worker with a bounded
ladder (close the control socket, SIGTERM, SIGKILL) and releases the shared memory.

A worker that exits, hangs or sends garbage while working is a node failure: the
session gets a NodeError naming the node and the input, and nothing waits forever.
The worker is replaced (see :mod:`remotemedia.executors.supervision` for the rules).

This module holds the per-input exchange with the worker (the input out, its
outputs back, an abandoned input settled, a lost one described). What it stands on
lives beside it, one concept a module: keeping a worker there to exchange with
(starts, restarts, recycling, the stop ladder: :mod:`~remotemedia.executors.supervisor`),
the bytes between runtime and worker (the control socket and the shared-memory ports,
and the fault seam around them: :mod:`~remotemedia.executors.link`),
the worker's OS process (:mod:`~remotemedia.executors.child`), the shared-memory
namespace (:mod:`~remotemedia.executors.namespace`), the circuit breaker registry
(:mod:`~remotemedia.executors.breakers`) and :class:`WorkerSettings`
(:mod:`~remotemedia.executors.settings`); their public names are re-exported here.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import trio

from remotemedia.environments.spec import Environment
from remotemedia.errors import LinkProtocolError, NodeEnvironmentError, NodeError, RemoteMediaError
from remotemedia.executors.link import NOTHING, End, WorkerLink
from remotemedia.executors.namespace import (
    PREFIX,
    default_namespace,
    new_session_id,
    remove_dead_namespaces,
)
from remotemedia.executors.reports import WorkerCall
from remotemedia.executors.settings import WorkerSettings
from remotemedia.executors.supervisor import WorkerError, WorkerLaunch, WorkerSupervisor
from remotemedia.ipc.codec import CorruptFrameError, encode_data_parts
from remotemedia.ipc.control import Count, LinkEvent, OutputReady
from remotemedia.ipc.shm import BUFFER, ShmError, safe_label
from remotemedia.media import Audio, RuntimeData, Text
from remotemedia.nodes import Node

__all__ = [
    "PREFIX",
    "ProcessNode",
    "WorkerError",
    "WorkerRestarted",
    "WorkerSettings",
    "default_namespace",
    "new_session_id",
    "remove_dead_namespaces",
]


class WorkerRestarted(RemoteMediaError):
    """A worker failed while processing an input and was replaced.

    That input is lost (reported as a failure of the node), but the session goes on:
    the new worker takes the next input.
    """

    transient = True


# The worker may publish BUFFER frames ahead of our credits; returning them in
# batches of half that never lets it run dry while saving a wake-up per frame.
_CREDIT_BATCH = BUFFER // 2


class ProcessNode(Node[Any]):
    """A node of another type, run in its own worker process.

    Attributes:
        on_call: Given each input's :class:`WorkerCall` when its EndOfInput arrives,
            if set (the session's worker metrics and trace spans).
    """

    def __init__(
        self,
        node_id: str,
        params: Any,
        *,
        node_class: type[Node[Any]],
        raw_params: dict[str, Any],
        session_id: str,
        settings: WorkerSettings,
        environment: Environment | None = None,
    ) -> None:
        super().__init__(node_id, params)
        self.node_type = node_class.node_type  # type: ignore[misc]  # report as the real type
        # The node's own Python environment, if it needs one: its workers start with
        # that interpreter (found, or built, by initialize()).
        self._python_environment = environment
        self.building_environment = False  # waiting for its environment's build
        self._session_id = session_id
        self._settings = settings
        launch = WorkerLaunch(
            node_id=node_id,
            node_type=self.node_type,
            class_path=f"{node_class.__module__}:{node_class.__qualname__}",
            raw_params=raw_params,
            session_id=session_id,
            # A node id is any text; iceoryx2 names are short ASCII (see safe_label).
            shm_base=f"{session_id}_{safe_label(node_id)}",
            environment=node_class.worker_environment,
            python=sys.executable,
        )
        self._worker = WorkerSupervisor(
            launch, settings, progress=self.report_progress, count=self.count
        )
        self._delivered = 0  # outputs of the input in flight yielded so far
        self._sent: tuple[int, float] = (0, 0.0)  # the input in flight: time_ns, perf_counter
        self.on_call: Callable[[WorkerCall], None] | None = None

    @property
    def pid(self) -> int | None:
        """The worker's process id, while it runs."""
        return self._worker.pid

    @property
    def worker_state(self) -> str:
        """What its worker is doing.

        ``building environment``, ``starting``, ``running``, ``replacing`` (the last
        one failed; the next input starts a new one) or ``stopped``.
        """
        worker = self._worker
        if self.building_environment:
            return "building environment"
        if worker.broken is not None:
            return "replacing"
        if worker.pid is None:
            return "starting" if worker.starts == 0 else "stopped"
        return "running"

    @property
    def starts(self) -> int:
        """Workers started for this node."""
        return self._worker.starts

    @property
    def restarts(self) -> int:
        """Workers started to replace one that failed."""
        return self._worker.restarts

    @property
    def recycled(self) -> int:
        """Workers replaced for outgrowing their memory budget."""
        return self._worker.recycled

    async def initialize(self) -> None:
        """Start the worker and wait until it has loaded its node (its ``ready``)."""
        self._worker.open_ports()
        self._worker.check_breaker()
        if self._python_environment is not None:
            await self._prepare_environment(self._python_environment)
        await self._worker.start()

    async def _prepare_environment(self, environment: Environment) -> None:
        """Find (or build) the node's Python environment; its build is not a worker start.

        Raises:
            NodeError: The environment cannot be made; the reason names the requirement
                and the build log.
        """
        environments = self._settings.environments
        self.building_environment = True  # still so if the wait is cancelled: it was
        try:
            python = await environments.ensure(environment, self.report_progress)
        except NodeEnvironmentError as exc:
            self.building_environment = False
            raise NodeError(self.node_id, self.node_type, exc.message) from exc
        self.building_environment = False
        # Only remotemedia itself, from the server: the environment has the rest.
        overrides = {"PYTHONPATH": environments.worker_path(), "PYTHONNOUSERSITE": "1"}
        self._worker.use_python(str(python), overrides)

    async def process(self, data: RuntimeData) -> AsyncIterator[RuntimeData]:
        """Send one input to the worker and yield its outputs until it is done."""
        # Closed with this generator: a caller may stop reading mid-input (cancelled).
        async with contextlib.aclosing(self._exchange(data)) as items:
            async for item in items:
                yield item

    async def flush(self) -> list[RuntimeData]:
        """End of input: the worker flushes its node; return what that produced."""
        worker = self._worker
        if worker.link is None or worker.broken is not None:
            return []  # a replacement worker would hold nothing to flush
        if worker.idle_worker_died():
            # Whatever it held is lost; say so (the session reports it and goes on).
            raise await self._fail(f"the worker process exited while idle: {worker.exited_how()}")
        return [item async for item in self._exchange(None)]

    async def cleanup(self) -> None:
        """Stop the worker and free the shared memory (bounded by the caller's deadline)."""
        await self._worker.close()

    async def _fail(
        self, what: str, lost: RuntimeData | None = None, delivered: int = 0
    ) -> WorkerRestarted:
        """A worker failed on an input: stop it now, report at once, replace it later.

        The replacement starts when the next input (or the flush) needs it, so the
        session hears of the lost input immediately, not after a restart. The report
        says how many outputs of the input were ``delivered`` before the failure:
        those stand, and only the rest is lost.
        """
        await self._worker.retire(what)
        return WorkerRestarted(
            f"{what}; {_describe_lost(lost, delivered)}a new worker takes the next input"
        )

    async def _exchange(self, data: RuntimeData | None) -> AsyncGenerator[RuntimeData, None]:
        # An EndOfInput frame as input asks the worker to flush its node.
        worker = self._worker
        if worker.in_flight:
            await self._settle_abandoned()
        if worker.idle_worker_died():
            # Died between inputs: this input was never in flight, so it is not lost;
            # the failure still counts, and a replacement takes the input.
            await worker.retire(f"the worker process exited while idle: {worker.exited_how()}")
        if worker.broken is not None:
            await worker.replace()
        link = worker.link
        assert link is not None
        # A bad input is the input's fault. The pieces are copied once, into shared
        # memory (``data`` is not changed meanwhile: nothing yields before that).
        parts = encode_data_parts(data, self._session_id)
        self._sent = (time.time_ns(), time.perf_counter())
        try:
            await link.send_input(parts, flush=data is None)
        except (OSError, ShmError):  # the worker is already gone
            reason = await worker.exit_reason()
            raise await self._fail(f"the worker process was gone: {reason}", data) from None
        worker.in_flight, self._delivered = True, 0
        try:
            async with contextlib.aclosing(self._answers(data)) as answers:
                async for item in answers:
                    yield item
        finally:
            if worker.in_flight:  # the caller stopped reading: the rest is not wanted
                self._ask_stop()

    def _ask_stop(self) -> None:
        """Ask the worker to stop its node's work on the input in flight (a Stop).

        Sent without waiting (the caller is being cancelled): one byte on a socket
        that has room for it. Should it not, the worker finishes the input and the
        next exchange reads what it sent, as before.
        """
        if self._worker.link is not None:
            self._worker.link.ask_stop()

    async def _settle_abandoned(self) -> None:
        """Let the worker finish an input whose outputs its caller stopped reading.

        A caller cancelled while it reads an input's outputs (a barge-in stops the
        coordinator's voice mid-synthesis) leaves the worker at work on that input,
        though told to stop (:meth:`_ask_stop`): its last outputs and its EndOfInput
        are still to come, and must not be taken for the next input's. They are read
        and dropped here, before the next input goes out: the worker, its model
        loaded, then serves that input, which waits at most for the node to notice
        the stop (a model step, for a generating node).
        Killing the worker instead would cost every barge-in a model load. The
        cancelled caller waited for none of this. A worker that dies or hangs
        meanwhile is replaced as usual, and the next input is not lost.
        """
        self.count("abandoned_input")
        try:
            async for _ in self._answers(None):
                pass  # nobody wants them any more
        except WorkerRestarted:
            pass  # it failed on that input and was stopped: the next input gets a new one
        except ValueError:
            pass  # its node failed on that input (an Error frame); the worker is fine
        if self._worker.broken is None and self._worker.over_memory_budget():
            await self._worker.recycle()

    async def _answers(self, data: RuntimeData | None) -> AsyncGenerator[RuntimeData, None]:
        """The worker's outputs for the input in flight (``data``), up to its EndOfInput.

        Outputs already yielded (:attr:`_delivered`, also by an earlier, cancelled
        call) stand whatever happens.
        """
        link = self._worker.link
        assert link is not None
        while True:
            delivered = self._delivered
            try:
                # Doorbells rung together arrive in one read: the later ones are here
                # already and need no wait, so no timer.
                event = link.buffered_event()
                if event is None:
                    event = await self._next_event(link, data, delivered)
            except LinkProtocolError as exc:  # garbage on the control socket
                what = f"the worker broke the control protocol: {exc}"
                raise await self._fail(what, data, delivered) from None
            if isinstance(event, Count):  # the node in the worker counted: the metrics
                self.count(event.event, event.amount)
                continue
            if not isinstance(event, OutputReady):
                continue  # nothing else the worker sends matters while it works
            try:
                result = await link.receive_output()
            except CorruptFrameError as exc:
                error = await self._fail(f"the worker sent a corrupt frame: {exc}", data, delivered)
                raise error from None
            link.credit(_CREDIT_BATCH)
            if result is NOTHING:
                continue
            if isinstance(result, Exception):
                self._worker.in_flight = False  # an Error frame ends the input too
                raise result
            if isinstance(result, End):
                await self._end(result, data, delivered)
                return
            self._delivered += 1
            yield result

    async def _next_event(
        self, link: WorkerLink, data: RuntimeData | None, delivered: int
    ) -> LinkEvent:
        """Wait for the worker's next event; a worker that hangs or dies has failed.

        Raises:
            WorkerRestarted: No event within ``call_timeout``, or the worker is gone.
            LinkProtocolError: What it sent breaks the control protocol.
        """
        with trio.move_on_after(self._settings.call_timeout) as deadline:
            event = await link.next_event()
        if deadline.cancelled_caught:
            raise await self._fail(
                f"the worker made no progress for {self._settings.call_timeout:g} "
                "s (hung) and was killed",
                data,
                delivered,
            )
        if event is None:
            reason = await self._worker.exit_reason()
            raise await self._fail(
                f"the worker process died while processing: {reason}", data, delivered
            )
        return event

    async def _end(self, end: End, data: RuntimeData | None, delivered: int) -> None:
        """The worker's EndOfInput for ``data``: it is done, with every output sent or not."""
        worker = self._worker
        worker.in_flight = False
        if end.outputs is not None and end.outputs != delivered:
            what = (
                f"{end.outputs - delivered} of the {end.outputs} outputs the "
                "worker sent for this input never arrived"
            )
            raise await self._fail(what, data, delivered)
        # A finished input: the worker is healthy again.
        worker.record_success()
        if self.on_call is not None:
            sent_ns, sent = self._sent
            self.on_call(
                WorkerCall(
                    self.node_id,
                    self.node_type,
                    worker.pid,
                    sent_ns,
                    time.perf_counter() - sent,
                    end.worked_ns,
                    flush=data is None,
                )
            )
        if data is not None and worker.over_memory_budget():
            await worker.recycle()


def _describe_lost(data: RuntimeData | None, delivered: int = 0) -> str:
    # Which input was lost, in the stream's terms: an utterance's sequence number
    # alone does not tell a user which words are missing from the transcript.
    if delivered:
        # Its outputs so far reached the session: calling the input lost would be
        # wrong (and a frame corrupted after the last output loses nothing at all).
        outputs = "1 output" if delivered == 1 else f"{delivered} outputs"
        were = "was" if delivered == 1 else "were"
        return f"{outputs} of this input {were} delivered, any more it had are lost; "
    if isinstance(data, Audio):
        start, end = data.metadata.get("start_ms"), data.metadata.get("end_ms")
        if isinstance(start, int | float) and isinstance(end, int | float):
            return f"lost the utterance at {start / 1000:.2f}-{end / 1000:.2f} s of the stream; "
        return f"lost {data.duration:.2f} s of audio; "
    if isinstance(data, Text):
        return f"lost the text {data.text[:40]!r}; "
    return ""
