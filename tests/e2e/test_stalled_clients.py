"""Clients that stop reading results can hold neither a session slot nor a call.

Each test floods a PassThrough session without reading a response, so the
server's buffers fill and its writes block on HTTP/2 flow control.
"""

from __future__ import annotations

import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError, StreamTerminatedError

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
