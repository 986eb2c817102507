"""Cross-session micro-batching of a shared model, without a background task.

Many sessions run the same small model (Silero VAD) at the same moments: every 20 ms
chunk of every session. One frame through Silero costs about 110 us; in a batch of 16
it costs about 60 us per frame, so batching frames of concurrent sessions halves the
model's CPU time.

Batches of more than one request run in a worker thread: ONNX Runtime releases the
GIL while it computes, so the model uses the second core while the Trio thread keeps
routing data. (Measured at 150 real-time VAD sessions on 2 cores: inline batches
saturate the Trio thread and latency grows without bound; threaded batches hold
p50 near 10 ms. At 100 sessions the two are within noise of each other.) A single
request runs inline, where a thread hop would cost more than it saves; so does every
batch of a process that may use one core only (``taskset``, a container's cpuset),
where the thread has no core of its own and each hop only adds thread switches
(at 40 real-time gRPC sessions on one core: see BENCHMARKS.md, "gRPC").

:class:`MicroBatcher` coalesces concurrent requests with a *leader* protocol instead
of a service task, so no task outlives the sessions that use it:

1. A request is queued; if no batch is running, its caller becomes the leader.
2. The leader yields once (so requests made at the same moment can join), takes up to
   ``max_batch`` queued requests, and runs them as one call.
3. The leader hands every caller its result (or the call's exception), then wakes the
   next queued caller, which becomes the next leader.
4. A caller cancelled while waiting removes its request; if it had been woken to
   lead, it passes leadership on. A batch, once started, always completes: the
   thread call is uncancellable, so no caller of that batch is left without an answer.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import outcome
import trio

__all__ = ["MicroBatcher"]

Req = TypeVar("Req")
Res = TypeVar("Res")


class _Pending(Generic[Req, Res]):
    __slots__ = ("outcome", "request", "wake")

    def __init__(self, request: Req) -> None:
        self.request = request
        self.outcome: outcome.Outcome[Res] | None = None
        self.wake = trio.Event()


class MicroBatcher(Generic[Req, Res]):
    """Runs ``run_batch`` over requests that arrive at about the same time.

    If a batch fails, each of its requests is run again on its own, so that one bad
    request fails only its own caller, never the other sessions batched with it.

    The batcher may be shared process-wide by one Trio run at a time (a new run
    starts it afresh).

    Args:
        run_batch: Maps a list of requests to their results, in order. Called in a
            worker thread for batches of more than one request (never twice at once),
            so it must not touch Trio or state shared with other code.
        max_batch: Largest batch handed to ``run_batch``.
    """

    def __init__(
        self, run_batch: Callable[[list[Req]], Sequence[Res]], *, max_batch: int = 64
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._queue: list[_Pending[Req, Res]] = []
        self._leading = False
        self._token: object | None = None
        self._threaded = True
        self.batches = 0
        self.requests = 0

    async def submit(self, request: Req) -> Res:
        """Run one request as part of a batch and return its result.

        Raises:
            Exception: Whatever ``run_batch`` raised for this request on its own.
        """
        self._bind_to_current_run()
        pending: _Pending[Req, Res] = _Pending(request)
        self._queue.append(pending)
        try:
            # Not queued and not done means a running batch holds the request: its
            # leader sets the outcome (or re-queues it) before waking this caller.
            while pending.outcome is None:
                if self._leading:
                    await pending.wake.wait()
                    pending.wake = trio.Event()
                else:
                    await self._lead()
        finally:
            if pending.outcome is None:
                self._abandon(pending)
        return pending.outcome.unwrap()

    async def _lead(self) -> None:
        self._leading = True
        batch: list[_Pending[Req, Res]] = []
        try:
            # Let requests made at the same moment (other sessions' chunks) join.
            await trio.lowlevel.checkpoint()
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            requests = [p.request for p in batch]
            if len(requests) == 1 or not self._threaded:
                outcomes = self._run(requests)
            else:
                outcomes = await trio.to_thread.run_sync(self._run, requests)
            for p, result in zip(batch, outcomes, strict=True):
                p.outcome = result
            self.batches += 1
            self.requests += len(batch)
        finally:
            self._leading = False
            for p in batch:
                if p.outcome is None:  # the leader itself was cancelled mid-way
                    self._queue.insert(0, p)
                p.wake.set()
            self._wake_next()

    def _run(self, requests: list[Req]) -> list[outcome.Outcome[Res]]:
        """Run a batch; if it fails, run each request alone to isolate the failure."""
        try:
            results = list(self._run_batch(requests))
        except Exception as exc:
            return self._isolate(requests, exc)
        if len(results) != len(requests):
            error = RuntimeError(
                f"run_batch returned {len(results)} results for {len(requests)} requests"
            )
            return self._isolate(requests, error)
        return [outcome.Value(result) for result in results]

    def _isolate(self, requests: list[Req], error: Exception) -> list[outcome.Outcome[Res]]:
        if len(requests) == 1:
            return [outcome.Error(error)]
        return [self._run_alone(request) for request in requests]

    def _run_alone(self, request: Req) -> outcome.Outcome[Res]:
        try:
            (result,) = self._run_batch([request])
        except Exception as exc:  # includes a wrong result count (ValueError)
            return outcome.Error(exc)
        return outcome.Value(result)

    def _abandon(self, pending: _Pending[Req, Res]) -> None:
        if pending in self._queue:
            self._queue.remove(pending)
        self._wake_next()

    def _wake_next(self) -> None:
        if not self._leading and self._queue:
            self._queue[0].wake.set()

    def _bind_to_current_run(self) -> None:
        # The batcher is shared process-wide; state left by an earlier trio.run
        # (interrupted mid-batch) must not leak into this one.
        token = trio.lowlevel.current_trio_token()
        if token is not self._token:
            self._token, self._queue, self._leading = token, [], False
            self._threaded = usable_cores() > 1


def usable_cores() -> int:
    """The cores this process may run on (its affinity, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
