"""Keeping one node's worker process there: start it, replace it, recycle it, stop it.

A :class:`~remotemedia.executors.process.ProcessNode` exchanges inputs with its worker;
its :class:`WorkerSupervisor` is what keeps a worker there to exchange them with. The
rules it applies (restart backoff, the circuit breaker) are the sans-IO ones of
:mod:`~remotemedia.executors.supervision`; this module holds them against a real OS
process, and keeps these on its own:

1. A start counts for the breaker of the node type (and params): a worker ready
   within ``start_timeout`` is a start, anything else (too slow, a Fatal frame, a
   hang-up) a failure; a start that is cancelled counts for neither.
2. A worker that fails on an input is retired at once (SIGKILL, no grace) and
   marked broken; its replacement starts when the next input (or the flush) needs
   it, with backoff. A replacement cancelled half-way leaves the worker broken.
3. A healthy worker over its memory budget is recycled between inputs: a clean
   stop and a new start, which is not a failure.
4. A stop is a ladder that fits the caller's deadline: close the control socket,
   SIGTERM, SIGKILL. Cut short, it still SIGKILLs, so no worker outlives its node.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from remotemedia.errors import LinkProtocolError, NodeError
from remotemedia.executors.breakers import breaker_for, now
from remotemedia.executors.child import ChildProcess, describe_exit
from remotemedia.executors.link import WorkerLink
from remotemedia.executors.reports import RECYCLED, RESTARTED
from remotemedia.executors.settings import WorkerSettings
from remotemedia.ipc.control import Config, Count, Fatal, Progress, Ready
from remotemedia.ipc.shm import ShmPort, remove_stale

__all__ = ["KILL_WAIT", "WorkerError", "WorkerLaunch", "WorkerSupervisor"]

logger = logging.getLogger(__name__)

KILL_WAIT = 1.0
"""Seconds a stop waits for a SIGKILLed worker to exit (the last step of the ladder)."""

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class WorkerError(NodeError):
    """The worker process of a node failed for good (it could not be restarted)."""


@attrs.frozen
class WorkerLaunch:
    """What a node's workers are started with.

    Attributes:
        node_id: The node's id.
        node_type: The node's type (what errors and breakers name).
        class_path: The node class the worker runs, as ``module:qualname``.
        raw_params: Its params, as the manifest gave them.
        session_id: The session's id.
        shm_base: The stem of the names of its shared-memory services.
        environment: Environment variables its worker starts with (its type's).
        python: The interpreter the worker runs on.
        overrides: Environment variables that win over the server's own.
    """

    node_id: str
    node_type: str
    class_path: str
    raw_params: dict[str, Any]
    session_id: str
    shm_base: str
    environment: Mapping[str, str]
    python: str
    overrides: Mapping[str, str] = attrs.field(factory=dict)


class WorkerSupervisor:
    """Keeps one node's worker process running (see the module's rules).

    Args:
        launch: What its workers start with.
        settings: How workers are run.
        progress: Awaited with each progress message a starting worker sends.
        count: Called with each count a worker's node makes while it starts.

    Attributes:
        link: The running worker's link; None between workers.
        broken: Why the worker must be replaced, if it must.
        in_flight: An input went out and its EndOfInput has not been read yet.
            Still so when the next exchange begins, its caller stopped reading (was
            cancelled): that exchange reads the rest first. A new worker has none.
        starts: Workers started.
        restarts: Workers started to replace one that failed.
        recycled: Workers replaced for outgrowing their memory budget.
    """

    def __init__(
        self,
        launch: WorkerLaunch,
        settings: WorkerSettings,
        *,
        progress: Callable[[str], Awaitable[None]],
        count: Callable[[str, int], None],
    ) -> None:
        self.launch = launch
        self._settings = settings
        self._progress = progress
        self._count = count
        self._breaker = breaker_for(launch.node_type, launch.raw_params)
        self._process: ChildProcess | None = None
        self.link: WorkerLink | None = None
        self._iox_node: Any = None
        self._inputs: ShmPort | None = None
        self._outputs: ShmPort | None = None
        self.starts = 0
        self.restarts = 0
        self.recycled = 0
        self.broken: str | None = None
        self._failures_in_row = 0
        self.in_flight = False

    @property
    def pid(self) -> int | None:
        """The worker's process id, while it runs."""
        return self._process.pid if self._process is not None else None

    def open_ports(self) -> None:
        """Make the shared-memory ports its workers' inputs and outputs go through."""
        base = self.launch.shm_base
        self._iox_node = self._settings.namespace.node(f"rm-{os.getpid()}-{base}")
        self._inputs = ShmPort(self._iox_node, f"{base}_input", publish=True)
        self._outputs = ShmPort(self._iox_node, f"{base}_output", publish=False)

    def check_breaker(self) -> None:
        """Raise :class:`WorkerError` if the breaker of its kind lets no worker start."""
        if not self._breaker.allow(now()):
            raise self._breaker_open()

    def use_python(self, python: str, overrides: Mapping[str, str]) -> None:
        """Start workers with ``python`` (the node's own environment's) from now on."""
        self.launch = attrs.evolve(self.launch, python=python, overrides=overrides)

    async def start(self) -> None:
        """Start a worker; its outcome counts for the breaker (a cancel counts for none)."""
        try:
            with trio.fail_after(self._settings.start_timeout):
                await self._start()
        except trio.TooSlowError:
            self._breaker.record_failure(now())
            raise WorkerError(
                self.launch.node_id,
                self.launch.node_type,
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
        self._settings.on_event("worker.started", self.launch.node_id)

    async def _start(self) -> None:
        link = self._spawn()
        config = self._config()
        reason: str | None = None
        try:
            await link.send_config(config)
            event = await link.next_event()
            while isinstance(event, Progress | Count):
                if isinstance(event, Progress):
                    await self._progress(event.message)  # to the client
                else:
                    self._count(event.event, event.amount)
                event = await link.next_event()
        except (OSError, LinkProtocolError) as exc:  # the worker hung up or sent garbage
            reason = f"{type(exc).__name__}: {exc}"
        else:
            if isinstance(event, Ready):
                return
            if isinstance(event, Fatal):
                reason = event.message
        raise WorkerError(
            self.launch.node_id,
            self.launch.node_type,
            f"the worker process did not start: {reason or await self.exit_reason()}",
        )

    def _spawn(self) -> WorkerLink:
        """Start the worker's process, and the link to it."""
        assert self._inputs is not None
        assert self._outputs is not None
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        # A new link per worker: it starts with all its credits and no earlier input.
        link = WorkerLink(ours, self._inputs, self._outputs)
        self.link = link = self._settings.link_seam(link, self.launch.node_id, self.kill_and_wait)
        self.in_flight = False
        try:
            self._process = ChildProcess(
                [self.launch.python, "-m", "remotemedia.executors.worker", str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                environment=self.launch.environment,
                overrides=self.launch.overrides,
            )
        finally:
            theirs.close()
        self.starts += 1
        return link

    def _config(self) -> Config:
        """The Config frame of the worker started last."""
        launch, namespace = self.launch, self._settings.namespace
        base = launch.shm_base
        return Config(
            node_class=launch.class_path,
            node_id=launch.node_id,
            params=launch.raw_params,
            session_id=launch.session_id,
            prefix=namespace.prefix,
            root=str(namespace.root),
            iox_node=f"rm-worker-{base}-{self.starts}",
            input=f"{base}_input",
            output=f"{base}_output",
        )

    async def retire(self, what: str) -> None:
        """Count a failure, stop the worker at once and mark it for replacement."""
        self._breaker.record_failure(now())
        self._failures_in_row += 1
        self._settings.on_event("worker.failed", self.launch.node_id)
        self.kill_now()
        self.broken = what
        self.in_flight = False  # whatever it was working on died with it
        await self.stop()  # also removes what a dead worker left in shared memory
        self._drain_outputs()

    def record_success(self) -> None:
        """A finished input: the worker is healthy again."""
        self._failures_in_row = 0
        self._breaker.record_success()

    def kill_now(self) -> None:
        """SIGKILL the worker, without waiting."""
        # A dead or hung worker gets no grace period.
        if self._process is not None:
            self._process.kill()

    async def kill_and_wait(self) -> None:
        """SIGKILL the worker and wait until it is gone (what a link's seam may do).

        Waiting makes the death happen at this point of the run (an injected fault's),
        not whenever the kernel gets to it (which would make replays differ).
        """
        self.kill_now()
        if self._process is not None:
            with trio.move_on_after(KILL_WAIT):
                await self._process.wait()

    async def replace(self) -> None:
        """Start a new worker after a failure (backoff, circuit breaker).

        Raises:
            WorkerError: Every restart failed, or the node type's breaker is open.
        """
        what, self.broken = self.broken, None
        try:
            await self._restart(what)
        except BaseException:
            if self.broken is None:
                # Cancelled (a barge-in stops the coordinator's voice, say): still
                # broken, and a worker half started is of no use; the next input
                # starts over.
                self.broken = what
                self.kill_now()
            raise

    async def _restart(self, what: str | None) -> None:
        last = ""
        for attempt, pause in self._settings.restart.attempts(self._failures_in_row):
            await trio.sleep(pause)
            if not self._breaker.allow(now()):
                self.broken = what  # still broken: a later input tries again
                raise self._breaker_open(what or "")
            try:
                await self.start()
            except WorkerError as error:
                await self.stop()
                last = f"{error.reason} (attempt {attempt})"
                continue
            self.restarts += 1
            self._count(RESTARTED, 1)
            return
        self.broken = what
        raise WorkerError(
            self.launch.node_id,
            self.launch.node_type,
            f"{what}; restarting it failed {len(self._settings.restart.delays)} times "
            f"(last: {last})",
        )

    def _breaker_open(self, what: str = "") -> WorkerError:
        lead = f"{what}; " if what else ""
        breaker, node_type = self._breaker, self.launch.node_type
        self._settings.on_event("breaker.open", self.launch.node_id)
        wait = breaker.retry_in(now())
        when = f"for {wait:.0f} s" if wait > 0 else "until the probe running now succeeds"
        return WorkerError(
            self.launch.node_id,
            node_type,
            f"{lead}{node_type} workers with these params failed {breaker.failures} times "
            f"in a row, so none is started {when} (circuit breaker open)",
        )

    def _drain_outputs(self) -> None:
        if self._outputs is not None:
            while True:
                with self._outputs.receive() as raw:
                    if raw is None:
                        return

    def idle_worker_died(self) -> bool:
        """Whether a worker not marked broken has exited (between inputs)."""
        return self.broken is None and self._process is not None and self._process.exited()

    def exited_how(self) -> str:
        """How the worker that exited did, as the end of a sentence."""
        assert self._process is not None
        assert self._process.returncode is not None
        return describe_exit(self._process.returncode)

    async def exit_reason(self) -> str:
        """How the worker ended, waiting a little for its exit status."""
        if self._process is None:
            return "it was never started"
        with trio.move_on_after(1.0):
            return describe_exit(await self._process.wait())
        return "it closed its control socket"

    def over_memory_budget(self) -> bool:
        """Whether the worker's resident memory exceeds its budget (``max_rss_mb``)."""
        budget = self._settings.max_rss_mb
        if budget <= 0 or self._process is None:
            return False
        try:  # /proc/<pid>/statm: size resident shared ... in pages
            pages = int(Path(f"/proc/{self._process.pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            return False  # exited meanwhile: the next input notices
        return pages * _PAGE_SIZE > budget * 1024 * 1024

    async def recycle(self) -> None:
        """Replace a healthy worker that outgrew its memory budget, between inputs."""
        logger.info(
            "Replacing the worker of node %r (%s): it outgrew its %g MiB memory budget.",
            self.launch.node_id,
            self.launch.node_type,
            self._settings.max_rss_mb,
        )
        await self.stop()  # a clean exit: it sees its control socket close
        try:
            await self.start()
        except WorkerError as error:
            # Not this input's fault (it is done): the next input restarts with backoff.
            await self.stop()
            self.broken = f"replacing the worker over its memory budget failed: {error.reason}"
            return
        self.recycled += 1
        self._count(RECYCLED, 1)

    async def stop(self) -> None:
        """Stop the worker: close its socket, then SIGTERM, then SIGKILL, within a deadline.

        See :func:`_stop_ladder`; a worker that did not exit cleanly also leaves
        its shared memory to remove.
        """
        if self.link is not None:
            self.link.close()  # a healthy worker exits at once on EOF
            self.link = None
        process = self._process
        if process is None:
            return
        await _stop_ladder(process, self._settings.stop_grace, self.launch.node_id)
        self._process = None
        if process.returncode != 0:
            # A worker that did not exit cleanly left its iceoryx2 node behind.
            remove_stale(self._settings.namespace)

    async def close(self) -> None:
        """Stop the worker and free the shared memory (bounded by the caller's deadline)."""
        try:
            if self.link is not None:
                await self.link.before_cleanup()
            await self.stop()
        finally:
            for port in (self._inputs, self._outputs):
                if port is not None:
                    port.close()
            self._inputs = self._outputs = self._iox_node = None


async def _stop_ladder(process: ChildProcess, stop_grace: float, node_id: str) -> None:
    """Wait for a worker told to exit (its socket closed), then SIGTERM it, then SIGKILL it.

    Each step waits ``stop_grace`` at most, shortened so that the whole ladder,
    SIGKILL included, fits the caller's deadline (a session runs ``cleanup()``
    shielded under one): a worker that ignores SIGTERM is killed in time, and
    nothing here shields itself past that deadline. Cut short anyway (cancelled),
    it still SIGKILLs the worker on its way out, so no worker outlives its node.
    """
    time_left = trio.current_effective_deadline() - trio.current_time()
    grace = max(0.0, min(stop_grace, (time_left - KILL_WAIT) / 2))
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
                "Worker %d of node '%s' had not exited when its stop was cut short; sent SIGKILL.",
                process.pid,
                node_id,
            )
