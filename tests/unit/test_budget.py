"""A session's byte budget: queued bytes stay bounded, and pipelines never deadlock on it.

Pure Trio logic, on the autojump clock.
"""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from remotemedia import Binary, Result
from remotemedia.manifest import manifest_from_dict
from remotemedia.nodes import builtin_registry
from remotemedia.session import compile_graph, open_session
from remotemedia.session.budget import ByteBudget

KILOBYTE = 1024


def _graph(nodes: list[str], edges: list[tuple[str, str]]) -> Any:
    manifest = manifest_from_dict(
        {
            "version": "v1",
            "metadata": {"name": "budget"},
            "nodes": [{"id": node, "node_type": "PassThrough"} for node in nodes],
            "connections": [{"from": a, "to": b} for a, b in edges],
        }
    )
    return compile_graph(manifest, builtin_registry())


CHAIN = (["a", "b", "c"], [("a", "b"), ("b", "c")])
DIAMOND = (["a", "b", "c", "d"], [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])


async def test_budget_bounds_queued_bytes_when_results_are_not_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    budget = ByteBudget(20 * KILOBYTE)
    sent = 0
    async with open_session(_graph(*CHAIN), builtin_registry(), budget=budget) as session:

        async def feed() -> None:
            nonlocal sent
            for _ in range(1000):
                await session.send(Binary(bytes(KILOBYTE)))
                sent += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            await trio.testing.wait_all_tasks_blocked()
            # Without the budget, 32 items per edge and 32 results would be queued
            # (128 KiB); with it, the queues hold the budget and no more.
            assert budget.used <= budget.limit
            assert sent < 32
            # Reading results makes room, and everything arrives.
            received = [await session.receive() for _ in range(1000)]
            assert len(received) == 1000
            nursery.cancel_scope.cancel()


async def test_budget_never_deadlocks_a_fan_out_and_fan_in(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two branches competing for a budget of two messages still finish."""
    budget = ByteBudget(2 * KILOBYTE)
    async with open_session(_graph(*DIAMOND), builtin_registry(), budget=budget) as session:

        async def feed() -> None:
            for _ in range(200):
                await session.send(Binary(bytes(KILOBYTE)))
            await session.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            results: list[Result] = [result async for result in session]
    assert len(results) == 400  # each input reaches the sink through both branches
    assert budget.used == 0


async def test_budget_lets_a_message_larger_than_itself_through(
    autojump_clock: trio.testing.MockClock,
) -> None:
    budget = ByteBudget(KILOBYTE)
    async with open_session(_graph(*CHAIN), builtin_registry(), budget=budget) as session:
        await session.send(Binary(bytes(100 * KILOBYTE)))
        await session.send_eof()
        results = [result async for result in session]
    assert len(results) == 1
    assert isinstance(results[0].data, Binary)
    assert len(results[0].data.data) == 100 * KILOBYTE


async def test_budget_hands_over_to_a_waiting_receiver_when_spent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    budget = ByteBudget(KILOBYTE)
    send, receive = trio.open_memory_channel[int](10)
    budget.used = KILOBYTE  # spent
    assert not budget.try_take(10, send)
    async with trio.open_nursery() as nursery:
        got: list[int] = []

        async def consumer() -> None:
            budget.receiver_waiting()
            got.append(await receive.receive())

        async def producer() -> None:
            await budget.take(10, send)  # parks until the consumer waits
            send.send_nowait(7)

        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(consumer)
    assert got == [7]
    assert budget.used == KILOBYTE + 10
