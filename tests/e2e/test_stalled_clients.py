"""Clients that stop reading results can hold neither a session slot nor a call.

Each test floods a PassThrough session without reading a response, so the
server's buffers fill and its writes block on HTTP/2 flow control.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

from remotemedia.service import reclaim
from remotemedia.transport.serving import ServerAddress
from tests.e2e.conftest import (
    TIMEOUT,
    ServerFactory,
    assert_serves,
    flood,
    open_channel,
    open_raw_stream,
    raw_stream,
    recv_until_ended,
    unwrap,
    wait_no_session_tasks,
)

KILOBYTE = 1 << 10
MEGABYTE = 1 << 20


async def _admitted(address: ServerAddress) -> None:
    """Retry opening a session until the server admits one (it is full until then)."""
    while True:
        try:
            await assert_serves(address)
            return
        except BaseException as error:
            refused = unwrap(error)
            if not isinstance(refused, GRPCError):
                raise
            assert refused.status is Status.RESOURCE_EXHAUSTED, refused
        await trio.sleep(0.05)


async def test_stalled_client_gives_up_its_slot_and_its_call_ends(
    start_server: ServerFactory,
) -> None:
    server = await start_server(max_sessions=1, idle_timeout=1.0)
    with trio.fail_after(TIMEOUT):
        async with raw_stream(server) as stalled, trio.open_nursery() as nursery:
            await nursery.start(flood, stalled, 64 * KILOBYTE)
            # The only slot is taken until the server gives up on the stalled client.
            await _admitted(server)
            # Its call has ended too (reset: a response was half written), so reading
            # now reaches the end instead of waiting forever.
            assert await recv_until_ended(stalled) is not None
            nursery.cancel_scope.cancel()
        await wait_no_session_tasks()


async def test_stalled_client_call_ends_after_max_duration(
    start_server: ServerFactory,
) -> None:
    server = await start_server(max_duration=1.0, idle_timeout=2.0)
    with trio.fail_after(TIMEOUT):
        async with raw_stream(server) as stalled:
            async with trio.open_nursery() as nursery:
                await nursery.start(flood, stalled, 64 * KILOBYTE)
                await wait_no_session_tasks()  # the session's duration ran out
                # Its call ends too: reset if a response was stuck half written when
                # the server gave up, else (the kernel took them all) its responses
                # and the duration error end it. Either way, reading reaches the end.
                ending = await recv_until_ended(stalled)
                assert ending is None or isinstance(ending, StreamTerminatedError), ending
                nursery.cancel_scope.cancel()
            if ending is None:
                await stalled.end()
        await assert_serves(server)


async def test_stalled_client_on_a_shared_connection_ends_alone(
    start_server: ServerFactory,
) -> None:
    """Resetting one stalled call leaves the other calls on its connection alone."""
    server = await start_server(idle_timeout=1.0)
    with trio.fail_after(TIMEOUT):
        async with open_channel(server) as channel, trio.open_nursery() as nursery:
            async with open_raw_stream(channel) as stalled:
                await nursery.start(flood, stalled, 64 * KILOBYTE)
                await wait_no_session_tasks()  # the server gave up on it
                assert await recv_until_ended(stalled) is not None
            async with open_raw_stream(channel) as other:
                await other.open_session()
                await other.finish()
            nursery.cancel_scope.cancel()


def _server_bytes(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes allocated by the server's own lines (the test's client is not counted)."""
    return sum(
        trace.size
        for trace in snapshot.traces
        if "/src/remotemedia/" in trace.traceback[0].filename
    )


async def _stalled_session_then_left_behind(server: ServerAddress, settle: float) -> int:
    """Run a session whose client floods 1 MiB chunks and never reads, until the server
    gives up on it; the bytes the server's own lines allocated that are still held
    ``settle`` seconds after its call ended."""
    gc.collect()
    gc.disable()  # what goes must go without Python's own collections
    tracemalloc.start()
    try:
        with trio.fail_after(TIMEOUT):
            async with raw_stream(server) as stalled:
                async with trio.open_nursery() as nursery:
                    await nursery.start(flood, stalled, MEGABYTE)
                    await wait_no_session_tasks()  # the server gave up on the client
                    nursery.cancel_scope.cancel()
                if await recv_until_ended(stalled) is None:
                    await stalled.end()
            await trio.sleep(settle)  # (the call's last task ends after its session's)
        _, peak = tracemalloc.get_traced_memory()
        assert peak > 16 * MEGABYTE  # the session did fill its queues (the client its own)
        return _server_bytes(tracemalloc.take_snapshot())
    finally:
        tracemalloc.stop()
        gc.enable()


async def test_a_stalled_session_that_ends_leaves_at_most_its_messages_in_hand(
    start_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without any collection, what an ended session queued goes with its call (it used
    # to stay in reference cycles: its 32 MiB budget's worth). What stays until the
    # next collection is the few messages its tasks had in hand (a traceback of Trio's
    # keeps their frames).
    monkeypatch.setattr(reclaim, "RECLAIM_INTERVAL", 3600.0)
    server = await start_server(idle_timeout=1.0)
    left = await _stalled_session_then_left_behind(server, 0.2)
    assert left < 8 * MEGABYTE, f"{left / MEGABYTE:.1f} MiB left behind"


async def test_the_server_collects_what_an_ended_session_left_behind(
    start_server: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reclaim, "RECLAIM_INTERVAL", 0.1)
    server = await start_server(idle_timeout=1.0)
    left = await _stalled_session_then_left_behind(server, 1.0)
    assert left < MEGABYTE, f"{left / MEGABYTE:.1f} MiB left behind"
