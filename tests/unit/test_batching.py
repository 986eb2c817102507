"""The MicroBatcher leader protocol: batching, failure isolation, cancellation."""

from __future__ import annotations

import random
import threading

import pytest
import trio

from remotemedia.nodes.batching import MicroBatcher


class Doubler:
    """run_batch that doubles ints, fails on negatives, and records its calls."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.threads: list[int] = []

    def __call__(self, requests: list[int]) -> list[int]:
        self.calls.append(list(requests))
        self.threads.append(threading.get_ident())
        if any(r < 0 for r in requests):
            raise ValueError(f"negative request in {requests}")
        return [2 * r for r in requests]


async def submit_all(batcher: MicroBatcher[int, int], requests: list[int]) -> dict[int, object]:
    results: dict[int, object] = {}

    async def one(request: int) -> None:
        try:
            results[request] = await batcher.submit(request)
        except ValueError as exc:
            results[request] = exc

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for request in requests:
                nursery.start_soon(one, request)
    return results


async def test_batcher_coalesces_concurrent_requests_and_answers_each_caller() -> None:
    run = Doubler()
    batcher = MicroBatcher(run, max_batch=8)
    results = await submit_all(batcher, list(range(20)))
    assert results == {r: 2 * r for r in range(20)}
    assert sorted(r for call in run.calls for r in call) == list(range(20))
    assert max(len(call) for call in run.calls) > 1
    assert all(len(call) <= 8 for call in run.calls)
    assert (batcher.batches, batcher.requests) == (len(run.calls), 20)


async def test_batcher_runs_a_lone_request_inline_and_batches_in_a_thread() -> None:
    run = Doubler()
    batcher = MicroBatcher(run)
    assert await batcher.submit(3) == 6
    await submit_all(batcher, [1, 2, 4, 5])
    main = threading.get_ident()
    for call, thread in zip(run.calls, run.threads, strict=True):
        assert (thread == main) == (len(call) == 1)


async def test_batcher_failure_fails_only_the_bad_requests_caller() -> None:
    run = Doubler()
    batcher = MicroBatcher(run)
    results = await submit_all(batcher, [1, 2, -3, 4])
    assert {k: v for k, v in results.items() if k != -3} == {1: 2, 2: 4, 4: 8}
    error = results[-3]
    assert isinstance(error, ValueError)
    assert str(error) == "negative request in [-3]"


async def test_batcher_wrong_result_count_is_isolated_not_a_hang() -> None:
    calls = 0

    def short(requests: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        return [r * 10 for r in requests][: max(1, len(requests) - 1)]

    batcher = MicroBatcher(short)
    results = await submit_all(batcher, [1, 2, 3])
    assert results == {1: 10, 2: 20, 3: 30}
    assert calls < 10


async def test_batcher_passes_none_results_through() -> None:
    batcher: MicroBatcher[int, None] = MicroBatcher(lambda requests: [None] * len(requests))
    with trio.fail_after(5):
        assert await batcher.submit(1) is None


async def test_batcher_cancelled_callers_never_strand_the_others() -> None:
    rng = random.Random(7)
    run = Doubler()
    batcher = MicroBatcher(run, max_batch=4)
    answered: dict[int, int] = {}

    async def one(request: int) -> None:
        with trio.move_on_after(rng.choice([0, 0.0005, 0.002, 1.0])):
            for _ in range(rng.randint(0, 3)):
                await trio.lowlevel.checkpoint()
            answered[request] = await batcher.submit(request)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for request in range(200):
                nursery.start_soon(one, request)
    assert all(value == 2 * key for key, value in answered.items())
    assert await batcher.submit(21) == 42  # still usable: leadership was never lost


def test_batcher_starts_afresh_in_a_new_trio_run() -> None:
    run = Doubler()
    batcher = MicroBatcher(run)
    for _ in range(2):
        assert trio.run(batcher.submit, 5) == 10


async def test_batcher_leader_cancelled_before_running_hands_over() -> None:
    run = Doubler()
    batcher = MicroBatcher(run)
    results: list[int] = []

    async def follower() -> None:
        results.append(await batcher.submit(2))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as leader_scope:
                nursery.start_soon(follower)
                leader_scope.cancel()
                with pytest.raises(trio.Cancelled):
                    await batcher.submit(1)
    assert results == [4]
    assert all(1 not in call for call in run.calls)


async def test_batcher_many_callers_over_many_rounds_are_all_answered() -> None:
    # Regression: a caller woken to lead can find its request already taken into a
    # batch by a newer leader; it must wait for that batch, not fail.
    rng = random.Random(3)
    run = Doubler()
    batcher = MicroBatcher(run, max_batch=4)
    answered = 0

    async def caller(base: int) -> None:
        nonlocal answered
        for round_ in range(20):
            for _ in range(rng.randint(0, 2)):
                await trio.lowlevel.checkpoint()
            assert await batcher.submit(base + round_) == 2 * (base + round_)
            answered += 1

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            for index in range(30):
                nursery.start_soon(caller, index * 100)
    assert answered == 600
