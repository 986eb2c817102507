"""``remotemedia loadtest``: many streaming sessions against a server or a balancer.

Each session streams a WAV file through a manifest (looped for ``--duration``),
paced in real time with ``--realtime``; sessions start spread over ``--ramp``. A
progress line shows the run; the end is a table: sessions ok and failed, chunk
latency percentiles (a chunk's send to each of its results), results per second,
errors by type, and how the sessions spread over the servers that answered (each
response names its server process). ``--find-capacity`` searches for the largest
number of sessions whose chunk p99 stays within ``--p99-ms`` with none failed.

The bookkeeping (:class:`LoadStats`, :func:`next_probe`) is plain code; the Trio
part only drives the client.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TextIO

import attrs
import numpy as np
import trio
import trio_asyncio

from remotemedia.cli.run import split_chunks
from remotemedia.client import ServerError
from remotemedia.client.client import Client, TrioClient
from remotemedia.media import Audio

__all__ = ["LoadOptions", "LoadStats", "find_capacity", "next_probe", "run_load"]

_TIMED_CHUNKS = 3000
"""Chunks per session whose send time is kept to time their results (60 s of 20 ms)."""


@attrs.frozen
class LoadOptions:
    """What one load run does.

    Attributes:
        server: ``host:port`` of a server or a balancer.
        manifest: A bundled example name, or a manifest file.
        audio: What each session streams.
        sessions: Sessions at once.
        ramp: Seconds over which the sessions start (evenly spread).
        duration: Seconds each session streams (the audio looped); 0: the audio once.
        realtime: Pace chunks in real time (else as fast as the server takes them).
        chunk_ms: Chunk length.
        token: Bearer token for the server.
        connections: Client connections the sessions share; 0: one per session.
    """

    server: str
    manifest: str
    audio: Audio
    sessions: int
    ramp: float = 0.0
    duration: float = 0.0
    realtime: bool = True
    chunk_ms: float = 20.0
    token: str | None = None
    connections: int = 0


@attrs.define
class LoadStats:
    """What a run measured so far (updated as results arrive)."""

    started: int = 0
    ok: int = 0
    failed: int = 0
    chunks_sent: int = 0
    results: int = 0
    latencies_ms: list[float] = attrs.Factory(list)
    errors: Counter[str] = attrs.Factory(Counter)
    servers: Counter[str] = attrs.Factory(Counter)
    seconds: float = 0.0

    @property
    def live(self) -> int:
        """Sessions started and not ended."""
        return self.started - self.ok - self.failed

    def percentile(self, q: float) -> float:
        """A chunk latency percentile in ms (NaN before any result)."""
        if not self.latencies_ms:
            return math.nan
        return float(np.percentile(self.latencies_ms, q))

    def progress(self) -> str:
        """The one-line view shown while the run goes on."""
        return (
            f"{self.seconds:6.1f}s  sessions live {self.live} ok {self.ok} failed "
            f"{self.failed}  chunks {self.chunks_sent}  results {self.results}  "
            f"p50 {self.percentile(50):.1f} ms  p99 {self.percentile(99):.1f} ms"
        )

    def table(self) -> str:
        """The final report."""
        rate = self.results / self.seconds if self.seconds else 0.0
        rows = [
            ("sessions ok / failed", f"{self.ok} / {self.failed}"),
            (
                "chunk latency p50 / p95 / p99",
                f"{self.percentile(50):.1f} / {self.percentile(95):.1f} / "
                f"{self.percentile(99):.1f} ms",
            ),
            ("chunks sent", str(self.chunks_sent)),
            ("results", f"{self.results} ({rate:.0f}/s over {self.seconds:.1f} s)"),
        ]
        rows += [(f"error: {kind}", str(count)) for kind, count in self.errors.most_common()]
        total = sum(self.servers.values())
        rows += [
            (f"server {server}", f"{count} sessions ({100 * count / total:.0f} %)")
            for server, count in sorted(self.servers.items())
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


async def _session(
    client: TrioClient, options: LoadOptions, chunks: Sequence[Audio], stats: LoadStats
) -> None:
    stats.started += 1
    sent_at: dict[int, float] = {}
    period = options.chunk_ms / 1000

    def more(index: int, begin: float) -> bool:
        if options.duration <= 0:
            return index < len(chunks)  # the audio once
        if options.realtime:
            return index * period < options.duration
        return trio.current_time() - begin < options.duration

    try:
        async with client.stream(options.manifest) as stream:
            stats.servers[stream.handle.server or "(unnamed)"] += 1

            async def feed() -> None:
                begin = trio.current_time()
                index = 0
                try:
                    while more(index, begin):
                        if options.realtime:
                            await trio.sleep_until(begin + index * period)
                        sent_at[index] = time.perf_counter()
                        # Bounded: a chunk's results come within a minute or not at all.
                        sent_at.pop(index - _TIMED_CHUNKS, None)
                        await stream.send(chunks[index % len(chunks)], sequence=index)
                        stats.chunks_sent += 1
                        index += 1
                    await stream.close()
                except ServerError:
                    return  # the server ended the session: the reader says why

            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed)
                async for result in stream:
                    stats.results += 1
                    sent = sent_at.get(result.sequence)
                    if sent is not None:
                        stats.latencies_ms.append((time.perf_counter() - sent) * 1000)
                    if result.error is not None:
                        stats.errors[type(result.error).__name__] += 1
        stats.ok += 1
    except ServerError as error:
        stats.failed += 1
        stats.errors[error.error_type or "ServerError"] += 1


async def run_load(
    options: LoadOptions, *, on_progress: Callable[[LoadStats], None] | None = None
) -> LoadStats:
    """Run ``options.sessions`` sessions to their end; what was measured."""
    chunks = split_chunks(options.audio, options.chunk_ms)
    stats = LoadStats()
    started = trio.current_time()
    count = options.connections or options.sessions
    async with trio.open_nursery() as outer:

        async def report() -> None:
            while True:
                await trio.sleep(1.0)
                stats.seconds = trio.current_time() - started
                if on_progress is not None:
                    on_progress(stats)

        outer.start_soon(report)
        async with _open_clients(options, count) as clients, trio.open_nursery() as sessions:
            for index in range(options.sessions):
                if options.ramp > 0:
                    await trio.sleep_until(started + options.ramp * index / options.sessions)
                sessions.start_soon(_session, clients[index % count], options, chunks, stats)
        outer.cancel_scope.cancel()
    stats.seconds = trio.current_time() - started
    return stats


@asynccontextmanager
async def _open_clients(options: LoadOptions, count: int) -> AsyncIterator[list[TrioClient]]:
    """``count`` client connections (each its own HTTP/2 connection), one asyncio loop."""
    async with trio_asyncio.open_loop(), AsyncExitStack() as stack:
        connect = functools.partial(Client.connect, options.server, token=options.token)
        yield [
            TrioClient(await stack.enter_async_context(trio_asyncio.aio_as_trio(connect())))
            for _ in range(count)
        ]


def next_probe(history: Sequence[tuple[int, bool]], start: int, limit: int) -> int | None:
    """The next session count to try when searching for capacity; None when found.

    Doubles from ``start`` until a count fails (its p99 too high, or a session
    failed), then halves the gap between the largest count that passed and the
    smallest that failed until they are adjacent. ``history`` is every (count,
    passed) tried so far; counts stay within 1..``limit``.
    """
    passed = [count for count, ok in history if ok]
    failed = [count for count, ok in history if not ok]
    good = max(passed, default=0)
    bad = min((count for count in failed if count > good), default=None)
    if bad is None:
        if not history:
            return min(start, limit)
        if good >= limit:
            return None
        return min(good * 2, limit)
    if bad - good <= 1:
        return None
    return (good + bad) // 2


def capacity_of(history: Sequence[tuple[int, bool]]) -> int:
    """The largest count that passed (0 if none did)."""
    return max((count for count, ok in history if ok), default=0)


async def find_capacity(
    options: LoadOptions,
    p99_ms: float,
    *,
    limit: int = 1000,
    out: TextIO = sys.stderr,
    on_progress: Callable[[LoadStats], None] | None = None,
) -> tuple[int, list[tuple[int, LoadStats]]]:
    """The largest session count whose chunk p99 is within ``p99_ms`` with no failure.

    ``options.sessions`` is where the search starts. Returns the capacity and every
    run made on the way.
    """
    history: list[tuple[int, bool]] = []
    runs: list[tuple[int, LoadStats]] = []
    while (count := next_probe(history, options.sessions, limit)) is not None:
        stats = await run_load(attrs.evolve(options, sessions=count), on_progress=on_progress)
        p99 = stats.percentile(99)
        passed = stats.failed == 0 and stats.results > 0 and p99 <= p99_ms
        verdict = "within" if passed else "over" if stats.failed == 0 else "failures"
        print(
            f"{count} sessions: p99 {p99:.1f} ms, {stats.failed} failed -> {verdict}",
            file=out,
            flush=True,
        )
        history.append((count, passed))
        runs.append((count, stats))
    return capacity_of(history), runs
