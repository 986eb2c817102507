"""``remotemedia stream``: stream a WAV file to a server and print results as they arrive."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable

import numpy as np
import trio

from remotemedia.cli.progress import ProgressBar
from remotemedia.cli.run import RunOptions, split_chunks
from remotemedia.client import ServerError, open_trio_client
from remotemedia.media import Audio
from remotemedia.session import Result

__all__ = ["stream_file"]


async def stream_file(
    server: str,
    manifest: str,
    audio: Audio,
    options: RunOptions,
    on_result: Callable[[Result], None],
    *,
    token: str | None = None,
    on_ready: Callable[[], None] | None = None,
) -> str:
    """Stream ``audio`` through ``manifest`` on ``server``; returns a summary line.

    ``on_ready`` is called once the session is ready, just before the first chunk.
    """
    chunks = split_chunks(audio, options.chunk_ms)
    sent_at: dict[int, float] = {}
    round_trips: list[float] = []
    sent_count = 0
    bar = ProgressBar(len(chunks), label="streaming", stream=sys.stderr)
    started = time.perf_counter()
    async with (
        open_trio_client(server, token=token) as client,
        client.stream(manifest) as stream,
    ):

        async def feed() -> None:
            nonlocal sent_count
            if on_ready is not None:
                on_ready()
            begin = trio.current_time()
            try:
                for index, chunk in enumerate(chunks):
                    if options.realtime:
                        # As from a live microphone: a chunk exists once its audio has passed.
                        await trio.sleep_until(begin + (index + 1) * options.chunk_ms / 1000)
                    sent_at[index] = time.perf_counter()
                    await stream.send(chunk, node_id=options.node_id or "", sequence=index)
                    sent_count = index + 1
                    bar.update(index + 1)
                await stream.close()
            except ServerError:
                return  # the server ended the session; the reader reports why

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            async for result in stream:
                sent = sent_at.pop(result.sequence, None)
                if sent is not None:
                    round_trips.append((time.perf_counter() - sent) * 1000)
                on_result(result)
        bar.close()
        reason = stream.handle.closed.reason if stream.handle.closed else "no closed message"
    wall = time.perf_counter() - started
    if round_trips:
        p50, p99 = np.percentile(round_trips, [50, 99])
        latency = f"chunk round trip p50 {p50:.2f} ms, p99 {p99:.2f} ms"
    else:
        latency = "no results to time"
    return (
        f"Streamed {sent_count} of {len(chunks)} chunks ({audio.duration:.2f} s of audio) to "
        f"{server} in {wall:.2f} s; {latency}; server closed: {reason}."
    )


def print_jsonl(record: dict[str, object]) -> None:
    """Print one JSON line."""
    print(json.dumps(record), flush=True)
