"""Running a node in a worker process, behind the ordinary node interface.

:class:`ProcessNode` stands in for the real node in a session: ``initialize()``
starts the worker and waits until it reports the model loaded, ``process()`` hands
the input over through shared memory and yields the worker's outputs until its
EndOfInput (or Error) frame, and ``cleanup()`` stops the worker with a bounded
ladder (close the control socket, SIGTERM, SIGKILL) and releases the shared memory.

A worker that exits, hangs or sends garbage while working is a node failure: the
session gets a NodeError naming the node and the input, and nothing waits forever.
The worker is replaced (see :mod:`remotemedia.executors.supervision` for the rules).

What this supervision stands on lives beside it, one concept a module: the worker's
OS process (:mod:`~remotemedia.executors.child`), the shared-memory namespace
(:mod:`~remotemedia.executors.namespace`), the circuit breaker registry
(:mod:`~remotemedia.executors.breakers`) and :class:`WorkerSettings`
(:mod:`~remotemedia.executors.settings`); their public names are re-exported here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import trio

from remotemedia.environments.spec import Environment
from remotemedia.errors import LinkProtocolError, NodeEnvironmentError, NodeError, RemoteMediaError
from remotemedia.executors.breakers import breaker_for, now
from remotemedia.executors.child import ChildProcess, describe_exit
from remotemedia.executors.link import NOTHING, End, WorkerLink
from remotemedia.executors.namespace import (
    PREFIX,
    default_namespace,
    new_session_id,
    remove_dead_namespaces,
)
from remotemedia.executors.settings import WorkerSettings
from remotemedia.ipc.codec import CorruptFrameError, encode_data_parts
from remotemedia.ipc.control import Config, Count, Fatal, OutputReady, Progress, Ready
from remotemedia.ipc.shm import BUFFER, ShmError, ShmPort, remove_stale, safe_label
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


class WorkerError(NodeError):
    """The worker process of a node failed for good (it could not be restarted)."""


class WorkerRestarted(RemoteMediaError):
    """A worker failed while processing an input and was replaced.

    That input is lost (reported as a failure of the node), but the session goes on:
    the new worker takes the next input.
    """

    transient = True


KILL_WAIT = 1.0
"""Seconds a stop waits for a SIGKILLed worker to exit (the last step of the ladder)."""


class ProcessNode(Node[Any]):
    """A node of another type, run in its own worker process."""

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
        self._class_path = f"{node_class.__module__}:{node_class.__qualname__}"
        self._environment = node_class.worker_environment
        # The node's own Python environment, if it needs one: its workers start with
        # that interpreter (found, or built, by initialize()).
        self._python_environment = environment
        self._python = sys.executable
        self._overrides: dict[str, str] = {}
        self.building_environment = False  # waiting for its environment's build
        self._raw_params = raw_params
        self._session_id = session_id
        # A node id is any text; iceoryx2 names are short ASCII (see safe_label).
        self._shm_base = f"{session_id}_{safe_label(node_id)}"
        self._settings = settings
        self._process: ChildProcess | None = None
        self._link: WorkerLink | None = None  # the running worker's; None between workers
        self._iox_node: Any = None
        self._inputs: ShmPort | None = None
        self._outputs: ShmPort | None = None
        self.starts = 0
        self.restarts = 0
        self.recycled = 0
        self._broken: str | None = None  # why the worker must be replaced, if it must
        self._failures_in_row = 0
        # An input went out and its EndOfInput has not been read: its caller stopped
        # reading (was cancelled), so the next exchange reads the rest first.
        self._in_flight = False
        self._delivered = 0  # outputs of the input in flight yielded so far
        self._breaker = breaker_for(self.node_type, raw_params)

    @property
    def pid(self) -> int | None:
        """The worker's process id, while it runs."""
        return self._process.pid if self._process is not None else None

    async def initialize(self) -> None:
        """Start the worker and wait until it has loaded its node (its ``ready``)."""
        settings = self._settings
        base = self._shm_base
        self._iox_node = settings.namespace.node(f"rm-{os.getpid()}-{base}")
        self._inputs = ShmPort(self._iox_node, f"{base}_input", publish=True)
        self._outputs = ShmPort(self._iox_node, f"{base}_output", publish=False)
        if not self._breaker.allow(now()):
            raise self._breaker_open()
        if self._python_environment is not None:
            await self._prepare_environment(self._python_environment)
        await self._start_counted()

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
        self._python = str(python)
        # Only remotemedia itself, from the server: the environment has the rest.
        self._overrides = {"PYTHONPATH": environments.worker_path(), "PYTHONNOUSERSITE": "1"}

    async def _start_counted(self) -> None:
        """Start a worker; its outcome counts for the breaker (a cancel counts for none)."""
        try:
            with trio.fail_after(self._settings.start_timeout):
                await self._start()
        except trio.TooSlowError:
            self._breaker.record_failure(now())
            raise WorkerError(
                self.node_id,
                self.node_type,
                f"the worker process did not become ready within "
                f"{self._settings.start_timeout:g} s",
            ) from None
        except WorkerError:
            self._breaker.record_failure(now())
            raise
        except BaseException:
            self._breaker.abandon_probe()
            raise
        self._breaker.record_started()
        self._settings.on_event("worker.started", self.node_id)

    async def _start(self) -> None:
        settings = self._settings
        base = self._shm_base
        assert self._inputs is not None
        assert self._outputs is not None
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        # A new link per worker: it starts with all its credits and no earlier input.
        link = WorkerLink(ours, self._inputs, self._outputs)
        self._link = link = settings.link_seam(link, self.node_id, self._killed)
        self._in_flight = False
        try:
            self._process = ChildProcess(
                [self._python, "-m", "remotemedia.executors.worker", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                environment=self._environment,
                overrides=self._overrides,
            )
        finally:
            theirs.close()
        self.starts += 1
        config = Config(
            node_class=self._class_path,
            node_id=self.node_id,
            params=self._raw_params,
            session_id=self._session_id,
            prefix=settings.namespace.prefix,
            root=str(settings.namespace.root),
            iox_node=f"rm-worker-{base}-{self.starts}",
            input=f"{base}_input",
            output=f"{base}_output",
        )
        reason: str | None = None
        try:
            await link.send_config(config)
            event = await link.next_event()
            while isinstance(event, Progress | Count):
                if isinstance(event, Progress):
                    await self.report_progress(event.message)  # to the client
                else:
                    self.count(event.event, event.amount)
                event = await link.next_event()
        except (OSError, LinkProtocolError) as exc:  # the worker hung up or sent garbage
            reason = f"{type(exc).__name__}: {exc}"
        else:
            if isinstance(event, Ready):
                return
            if isinstance(event, Fatal):
                reason = event.message
        raise WorkerError(
            self.node_id,
            self.node_type,
            f"the worker process did not start: {reason or await self._exit_reason()}",
        )

    async def _fail(
        self, what: str, lost: RuntimeData | None = None, delivered: int = 0
    ) -> WorkerRestarted:
        """A worker failed on an input: stop it now, report at once, replace it later.

        The replacement starts when the next input (or the flush) needs it, so the
        session hears of the lost input immediately, not after a restart. The report
        says how many outputs of the input were ``delivered`` before the failure:
        those stand, and only the rest is lost.
        """
        await self._retire(what)
        return WorkerRestarted(
            f"{what}; {_describe_lost(lost, delivered)}a new worker takes the next input"
        )

    async def _retire(self, what: str) -> None:
        """Count a failure, stop the worker at once and mark it for replacement."""
        self._breaker.record_failure(now())
        self._failures_in_row += 1
        self._settings.on_event("worker.failed", self.node_id)
        self._kill_now()
        self._broken = what
        self._in_flight = False  # whatever it was working on died with it
        await self._stop_process()  # also removes what a dead worker left in shared memory
        self._drain_outputs()

    def _kill_now(self) -> None:
        # A dead or hung worker gets no grace period.
        if self._process is not None:
            self._process.kill()

    async def _killed(self) -> None:
        """SIGKILL the worker and wait until it is gone (what a link's seam may do).

        Waiting makes the death happen at this point of the run (an injected fault's),
        not whenever the kernel gets to it (which would make replays differ).
        """
        self._kill_now()
        if self._process is not None:
            with trio.move_on_after(KILL_WAIT):
                await self._process.wait()

    async def _replace(self) -> None:
        """Start a new worker after a failure (backoff, circuit breaker).

        Raises:
            WorkerError: Every restart failed, or the node type's breaker is open.
        """
        what, self._broken = self._broken, None
        try:
            await self._restart(what)
        except BaseException:
            if self._broken is None:
                # Cancelled (a barge-in stops the coordinator's voice, say): still
                # broken, and a worker half started is of no use; the next input
                # starts over.
                self._broken = what
                self._kill_now()
            raise

    async def _restart(self, what: str | None) -> None:
        last = ""
        for attempt, pause in self._settings.restart.attempts(self._failures_in_row):
            await trio.sleep(pause)
            if not self._breaker.allow(now()):
                self._broken = what  # still broken: a later input tries again
                raise self._breaker_open(what or "")
            try:
                await self._start_counted()
            except WorkerError as error:
                await self._stop_process()
                last = f"{error.reason} (attempt {attempt})"
                continue
            self.restarts += 1
            return
        self._broken = what
        raise WorkerError(
            self.node_id,
            self.node_type,
            f"{what}; restarting it failed {len(self._settings.restart.delays)} times "
            f"(last: {last})",
        )

    def _breaker_open(self, what: str = "") -> WorkerError:
        lead = f"{what}; " if what else ""
        breaker = self._breaker
        self._settings.on_event("breaker.open", self.node_id)
        wait = breaker.retry_in(now())
        when = f"for {wait:.0f} s" if wait > 0 else "until the probe running now succeeds"
        return WorkerError(
            self.node_id,
            self.node_type,
            f"{lead}{self.node_type} workers with these params failed {breaker.failures} times "
            f"in a row, so none is started {when} (circuit breaker open)",
        )

    def _drain_outputs(self) -> None:
        if self._outputs is not None:
            while True:
                with self._outputs.receive() as raw:
                    if raw is None:
                        return

    async def process(self, data: RuntimeData) -> AsyncIterator[RuntimeData]:
        """Send one input to the worker and yield its outputs until it is done."""
        # Closed with this generator: a caller may stop reading mid-input (cancelled).
        async with contextlib.aclosing(self._exchange(data)) as items:
            async for item in items:
                yield item

    async def flush(self) -> list[RuntimeData]:
        """End of input: the worker flushes its node; return what that produced."""
        if self._link is None or self._broken is not None:
            return []  # a replacement worker would hold nothing to flush
        if self._idle_worker_died():
            # Whatever it held is lost; say so (the session reports it and goes on).
            raise await self._fail(f"the worker process exited while idle: {self._exited_how()}")
        return [item async for item in self._exchange(None)]

    def _idle_worker_died(self) -> bool:
        return self._broken is None and self._process is not None and self._process.exited()

    def _exited_how(self) -> str:
        assert self._process is not None
        assert self._process.returncode is not None
        return describe_exit(self._process.returncode)

    async def _exchange(self, data: RuntimeData | None) -> AsyncGenerator[RuntimeData, None]:
        # An EndOfInput frame as input asks the worker to flush its node.
        if self._in_flight:
            await self._settle_abandoned()
        if self._idle_worker_died():
            # Died between inputs: this input was never in flight, so it is not lost;
            # the failure still counts, and a replacement takes the input.
            await self._retire(f"the worker process exited while idle: {self._exited_how()}")
        if self._broken is not None:
            await self._replace()
        link = self._link
        assert link is not None
        # A bad input is the input's fault. The pieces are copied once, into shared
        # memory (``data`` is not changed meanwhile: nothing yields before that).
        parts = encode_data_parts(data, self._session_id)
        try:
            await link.send_input(parts, flush=data is None)
        except (OSError, ShmError):  # the worker is already gone
            reason = await self._exit_reason()
            raise await self._fail(f"the worker process was gone: {reason}", data) from None
        self._in_flight, self._delivered = True, 0
        try:
            async with contextlib.aclosing(self._answers(data)) as answers:
                async for item in answers:
                    yield item
        finally:
            if self._in_flight:  # the caller stopped reading: the rest is not wanted
                self._ask_stop()

    def _ask_stop(self) -> None:
        """Ask the worker to stop its node's work on the input in flight (a Stop).

        Sent without waiting (the caller is being cancelled): one byte on a socket
        that has room for it. Should it not, the worker finishes the input and the
        next exchange reads what it sent, as before.
        """
        if self._link is not None:
            self._link.ask_stop()

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
        if self._broken is None and self._over_memory_budget():
            await self._recycle()

    async def _answers(self, data: RuntimeData | None) -> AsyncGenerator[RuntimeData, None]:
        """The worker's outputs for the input in flight (``data``), up to its EndOfInput.

        Outputs already yielded (:attr:`_delivered`, also by an earlier, cancelled
        call) stand whatever happens.
        """
        link = self._link
        assert link is not None
        while True:
            delivered = self._delivered
            try:
                # Doorbells rung together arrive in one read: the later ones are here
                # already and need no wait, so no timer.
                event = link.buffered_event()
                if event is None:
                    with trio.move_on_after(self._settings.call_timeout) as deadline:
                        event = await link.next_event()
                    if deadline.cancelled_caught:
                        raise await self._fail(
                            f"the worker made no progress for {self._settings.call_timeout:g} "
                            "s (hung) and was killed",
                            data,
                            delivered,
                        )
            except LinkProtocolError as exc:  # garbage on the control socket
                what = f"the worker broke the control protocol: {exc}"
                raise await self._fail(what, data, delivered) from None
            if event is None:
                reason = await self._exit_reason()
                raise await self._fail(
                    f"the worker process died while processing: {reason}", data, delivered
                )
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
                self._in_flight = False  # an Error frame ends the input too
                raise result
            if isinstance(result, End):
                self._in_flight = False
                if result.outputs is not None and result.outputs != delivered:
                    what = (
                        f"{result.outputs - delivered} of the {result.outputs} outputs the "
                        "worker sent for this input never arrived"
                    )
                    raise await self._fail(what, data, delivered)
                # A finished input: the worker is healthy again.
                self._failures_in_row = 0
                self._breaker.record_success()
                if data is not None and self._over_memory_budget():
                    await self._recycle()
                return
            self._delivered += 1
            yield result

    def _over_memory_budget(self) -> bool:
        budget = self._settings.max_rss_mb
        if budget <= 0 or self._process is None:
            return False
        try:  # /proc/<pid>/statm: size resident shared ... in pages
            pages = int(Path(f"/proc/{self._process.pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return False  # exited meanwhile: the next input notices
        return pages * _PAGE_SIZE > budget * 1024 * 1024

    async def _recycle(self) -> None:
        """Replace a healthy worker that outgrew its memory budget, between inputs."""
        logger.info(
            "Replacing the worker of node %r (%s): it outgrew its %g MiB memory budget.",
            self.node_id,
            self.node_type,
            self._settings.max_rss_mb,
        )
        await self._stop_process()  # a clean exit: it sees its control socket close
        try:
            await self._start_counted()
        except WorkerError as error:
            # Not this input's fault (it is done): the next input restarts with backoff.
            await self._stop_process()
            self._broken = f"replacing the worker over its memory budget failed: {error.reason}"
            return
        self.recycled += 1

    async def _exit_reason(self) -> str:
        if self._process is None:
            return "it was never started"
        with trio.move_on_after(1.0):
            return describe_exit(await self._process.wait())
        return "it closed its control socket"

    async def _stop_process(self) -> None:
        """Stop the worker: close its socket, then SIGTERM, then SIGKILL, within a deadline.

        Each step waits ``stop_grace`` at most, shortened so that the whole ladder,
        SIGKILL included, fits the caller's deadline (a session runs ``cleanup()``
        shielded under one): a worker that ignores SIGTERM is killed in time, and
        nothing here shields itself past that deadline. Cut short anyway (cancelled),
        it still SIGKILLs the worker on its way out, so no worker outlives its node.
        """
        if self._link is not None:
            self._link.close()  # a healthy worker exits at once on EOF
            self._link = None
        process = self._process
        if process is None:
            return
        time_left = trio.current_effective_deadline() - trio.current_time()
        grace = max(0.0, min(self._settings.stop_grace, (time_left - KILL_WAIT) / 2))
        try:
            for next_step in (process.terminate, process.kill):
                with trio.move_on_after(grace):
                    await process.wait()
                if process.returncode is not None:
                    break
                next_step()
            with trio.move_on_after(KILL_WAIT):
                await process.wait()
        finally:
            if not process.exited():
                process.kill()
                logger.warning(
                    "Worker %d of node '%s' had not exited when its stop was cut short; "
                    "sent SIGKILL.",
                    process.pid,
                    self.node_id,
                )
        self._process = None
        if process.returncode != 0:
            # A worker that did not exit cleanly left its iceoryx2 node behind.
            remove_stale(self._settings.namespace)

    async def cleanup(self) -> None:
        """Stop the worker and free the shared memory (bounded by the caller's deadline)."""
        try:
            if self._link is not None:
                await self._link.before_cleanup()
            await self._stop_process()
        finally:
            for port in (self._inputs, self._outputs):
                if port is not None:
                    port.close()
            self._inputs = self._outputs = self._iox_node = None


# The worker may publish BUFFER frames ahead of our credits; returning them in
# batches of half that never lets it run dry while saving a wake-up per frame.
_CREDIT_BATCH = BUFFER // 2


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


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
logger = logging.getLogger(__name__)
