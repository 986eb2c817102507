"""Session routing, ordering, backpressure and shutdown, on Trio's autojump clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from remotemedia import (
    Audio,
    Json,
    NodeError,
    NodeRegistry,
    PipelineClosedError,
    Result,
    Text,
    UnknownNodeError,
)
from remotemedia.manifest import manifest_from_dict
from remotemedia.nodes import Node, NoParams, builtin_registry
from remotemedia.nodes.base import Emit
from remotemedia.params import param
from remotemedia.session import compile_graph, open_session


@attrs.frozen
class RepeatParams:
    times: int = param(2, doc="copies per input", ge=0)


class Repeat(Node[RepeatParams]):
    """Emit each input `times` times (0..N outputs per input)."""

    node_type = "Repeat"
    Params = RepeatParams

    def process(self, data: Any) -> list[Any]:
        return [data] * self.params.times


class Tag(Node[Any]):
    """Append the node id to a text input."""

    node_type = "Tag"

    def process(self, data: Any) -> Any:
        return Text(f"{data.text}>{self.node_id}")


@attrs.frozen
class SlowParams:
    delay: float = param(1.0, doc="seconds per input", ge=0)


class Slow(Node[SlowParams]):
    """A coroutine process() that takes `delay` seconds per input."""

    node_type = "Slow"
    Params = SlowParams

    async def process(self, data: Any) -> Any:
        await trio.sleep(self.params.delay)
        return data


class Spread(Node[Any]):
    """An async-generator process() yielding three outputs, one per second."""

    node_type = "Spread"

    async def process(self, data: Any) -> AsyncIterator[Any]:
        for index in range(3):
            await trio.sleep(1)
            yield Text(f"{data.text}.{index}")


class Boom(Node[Any]):
    """Fail on the text 'boom'."""

    node_type = "Boom"

    def process(self, data: Any) -> Any:
        if isinstance(data, Text) and data.text == "boom":
            raise RuntimeError("kaboom")
        return data


class BadInit(Node[Any]):
    node_type = "BadInit"

    async def initialize(self) -> None:
        raise OSError("model file missing")

    def process(self, data: Any) -> Any:
        return data


class Buffering(Node[Any]):
    """Hold every input until flush: end of input must reach it."""

    node_type = "Buffering"

    def __init__(self, node_id: str, params: Any) -> None:
        super().__init__(node_id, params)
        self.held: list[Any] = []

    def process(self, data: Any) -> None:
        self.held.append(data)

    def flush(self) -> list[Any]:
        return [Json({"held": len(self.held)})]


class BadInit2(Node[Any]):
    """A node whose constructor fails."""

    node_type = "BadCtor"

    def __init__(self, node_id: str, params: Any) -> None:
        raise ValueError("needs a GPU")


class BadFlush(Node[Any]):
    node_type = "BadFlush"

    def process(self, data: Any) -> Any:
        return data

    def flush(self) -> Any:
        raise RuntimeError("lost the buffer")


CLEANED: list[str] = []


class Tracked(Node[Any]):
    node_type = "Tracked"

    def process(self, data: Any) -> Any:
        return data

    async def cleanup(self) -> None:
        CLEANED.append(self.node_id)


class Counted(Node[Any]):
    """A child node: tags and counts each input, and reports progress while it loads."""

    node_type = "Counted"

    async def initialize(self) -> None:
        await self.report_progress("loading the child")

    def process(self, data: Any) -> Any:
        self.count("tagged")
        return Text(f"{data.text}>{self.node_id}")


class Parent(Node[Any]):
    """A duplex node answering through a child it owns; refuses the text 'refuse'."""

    node_type = "Parent"

    def __init__(self, node_id: str, params: Any) -> None:
        super().__init__(node_id, params)
        self.child: Node[Any] | None = None

    async def initialize(self) -> None:
        self.child = self.make_child("tagger", Counted, NoParams())
        await self.child.initialize()

    async def cleanup(self) -> None:
        assert self.child is not None
        await self.child.cleanup()
        CLEANED.append(self.child.node_id)

    async def run(self, inputs: AsyncIterator[Any], emit: Emit) -> None:
        assert self.child is not None
        async for data in inputs:
            if data.text == "refuse":
                await self.input_failed("the text 'refuse' is refused; send any other")
            else:
                await emit(self.child.process(data))


@pytest.fixture
def registry() -> NodeRegistry:
    registry = builtin_registry()
    for cls in (
        Repeat,
        Tag,
        Slow,
        Spread,
        Boom,
        BadInit,
        BadInit2,
        BadFlush,
        Buffering,
        Tracked,
        Parent,
    ):
        registry.register(cls)
    return registry


def graph_of(
    registry: NodeRegistry,
    nodes: list[tuple[str, str, dict[str, Any]]],
    edges: list[tuple[str, str]],
):  # type: ignore[no-untyped-def]
    manifest = manifest_from_dict(
        {
            "version": "v1",
            "metadata": {"name": "test"},
            "nodes": [{"id": i, "node_type": t, "params": p} for i, t, p in nodes],
            "connections": [{"from": a, "to": b} for a, b in edges],
        }
    )
    return compile_graph(manifest, registry)


async def run_all(
    registry: NodeRegistry, graph: Any, inputs: list[Any], **send: Any
) -> list[Result]:
    async with open_session(graph, registry) as session:
        results: list[Result] = []

        async def feed() -> None:
            for item in inputs:
                await session.send(item, **send)
            await session.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            results = [r async for r in session]
    return results


async def test_session_fan_out_delivers_every_output_to_every_successor(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    graph = graph_of(
        registry,
        [("src", "PassThrough", {}), ("a", "Tag", {}), ("b", "Tag", {})],
        [("src", "a"), ("src", "b")],
    )
    results = await run_all(registry, graph, [Text("x"), Text("y")])
    by_sink = {
        sink: [(r.sequence, r.data.text) for r in results if r.node_id == sink] for sink in "ab"
    }
    assert by_sink == {"a": [(0, "x>a"), (1, "y>a")], "b": [(0, "x>b"), (1, "y>b")]}


async def test_session_output_node_sends_to_the_client_and_to_its_successors(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    manifest = manifest_from_dict(
        {
            "version": "v1",
            "nodes": [
                {"id": "a", "node_type": "Tag", "is_output_node": True},
                {"id": "b", "node_type": "Tag"},
            ],
            "connections": [{"from": "a", "to": "b"}],
        }
    )
    graph = compile_graph(manifest, registry)
    assert graph.sinks == ("a", "b")
    results = await run_all(registry, graph, [Text("x"), Text("y")])
    assert sorted((r.node_id, r.sequence, r.data.text) for r in results) == [
        ("a", 0, "x>a"),
        ("a", 1, "y>a"),
        ("b", 0, "x>a>b"),
        ("b", 1, "y>a>b"),
    ]


async def test_session_fan_in_merges_both_branches_and_keeps_sequences(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    graph = graph_of(
        registry,
        [("src", "PassThrough", {}), ("a", "Tag", {}), ("b", "Tag", {}), ("join", "Tag", {})],
        [("src", "a"), ("src", "b"), ("a", "join"), ("b", "join")],
    )
    results = await run_all(registry, graph, [Text("x"), Text("y")])
    assert graph.sinks == ("join",)
    assert sorted((r.sequence, r.data.text) for r in results) == [
        (0, "x>a>join"),
        (0, "x>b>join"),
        (1, "y>a>join"),
        (1, "y>b>join"),
    ]


async def test_session_preserves_order_per_edge_through_a_chain(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    graph = graph_of(
        registry,
        [(f"n{i}", "PassThrough", {}) for i in range(5)],
        [(f"n{i}", f"n{i + 1}") for i in range(4)],
    )
    inputs = [Text(str(i)) for i in range(500)]
    results = await run_all(registry, graph, inputs)
    assert [r.data.text for r in results] == [str(i) for i in range(500)]
    assert [r.sequence for r in results] == list(range(500))


async def test_session_one_input_may_yield_zero_or_many_results(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    for times in (0, 1, 4):
        graph = graph_of(registry, [("rep", "Repeat", {"times": times})], [])
        results = await run_all(registry, graph, [Text("a"), Text("b")])
        assert [r.sequence for r in results] == [0] * times + [1] * times


async def test_session_uses_the_callers_sequence_numbers(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    graph = graph_of(registry, [("p", "PassThrough", {})], [])
    async with open_session(graph, registry) as session:
        assert await session.send(Text("a"), sequence=41) == 41
        assert await session.send(Text("b")) == 42
        await session.send_eof()
        assert [r.sequence async for r in session] == [41, 42]


async def test_session_routes_input_to_the_named_node_only(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    graph = graph_of(
        registry, [("a", "Tag", {}), ("b", "Tag", {}), ("c", "Tag", {})], [("a", "c"), ("b", "c")]
    )
    results = await run_all(registry, graph, [Text("x")], node_id="b")
    assert [(r.node_id, r.data.text) for r in results] == [("c", "x>b>c")]


async def test_session_unknown_target_node_is_an_error_naming_the_nodes(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    graph = graph_of(registry, [("a", "PassThrough", {})], [])
    async with open_session(graph, registry) as session:
        with pytest.raises(
            UnknownNodeError, match="No node 'nope' in pipeline 'test'; its nodes are: a"
        ):
            await session.send(Text("x"), node_id="nope")


async def test_session_send_after_eof_raises_pipeline_closed(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    graph = graph_of(registry, [("a", "PassThrough", {})], [])
    async with open_session(graph, registry) as session:
        await session.send_eof()
        await session.send_eof()  # idempotent
        with pytest.raises(PipelineClosedError, match="already ended"):
            await session.send(Text("x"))


async def test_session_end_of_input_flushes_every_node_in_order(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    graph = graph_of(
        registry,
        [("chunk", "AudioChunkerNode", {"chunk_size": 100}), ("hold", "Buffering", {})],
        [("chunk", "hold")],
    )
    inputs = [Audio([0.0] * 30, 16_000) for _ in range(11)]  # 330 frames: 3 chunks + 30 left
    results = await run_all(registry, graph, inputs)
    # The chunker's remainder must reach the buffering node before its own flush.
    assert [r.data.value for r in results] == [{"held": 4}]
    assert results[0].sequence == 10


async def test_session_backpressure_bounds_everything_in_flight(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    graph = graph_of(registry, [("a", "PassThrough", {}), ("b", "PassThrough", {})], [("a", "b")])
    capacity = 4
    async with open_session(graph, registry, edge_capacity=capacity) as session:
        sent = 0

        async def producer() -> None:
            nonlocal sent
            while True:
                await session.send(Text("x"))
                sent += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer)
            await trio.testing.wait_all_tasks_blocked()
            # Nobody reads results: inbox a, inbox b and the results channel fill up,
            # each node holds one item it is trying to pass on, and the producer stops.
            assert sent == 3 * capacity + 2
            await trio.sleep(3600)
            assert sent == 3 * capacity + 2
            first = await session.receive()
            assert first.sequence == 0
            await trio.testing.wait_all_tasks_blocked()
            assert sent == 3 * capacity + 3
            nursery.cancel_scope.cancel()


async def test_session_runs_coroutine_and_async_generator_nodes(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    graph = graph_of(
        registry, [("slow", "Slow", {"delay": 2.0}), ("spread", "Spread", {})], [("slow", "spread")]
    )
    start = trio.current_time()
    results = await run_all(registry, graph, [Text("a"), Text("b")])
    assert [r.data.text for r in results] == ["a.0", "a.1", "a.2", "b.0", "b.1", "b.2"]
    assert [r.sequence for r in results] == [0, 0, 0, 1, 1, 1]
    # slow: 2 s per input, overlapped with spread's 3 s per input: 2 + 3 + 3 = 8 s.
    assert trio.current_time() - start == pytest.approx(8.0)


async def test_session_node_failure_raises_one_node_error_naming_the_node(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    graph = graph_of(
        registry, [("src", "PassThrough", {}), ("bomb", "Boom", {})], [("src", "bomb")]
    )
    with pytest.raises(NodeError) as caught:
        await run_all(registry, graph, [Text("ok"), Text("boom"), Text("never")])
    error = caught.value
    assert (error.node_id, error.node_type, error.sequence) == ("bomb", "Boom", 1)
    assert str(error) == "Node 'bomb' (Boom) failed while processing input #1: RuntimeError: kaboom"
    assert isinstance(error.__cause__, RuntimeError)


async def test_session_initialisation_failure_is_a_node_error(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    graph = graph_of(registry, [("ok", "PassThrough", {}), ("bad", "BadInit", {})], [("ok", "bad")])
    with pytest.raises(
        NodeError, match=r"Node 'bad' \(BadInit\) failed: could not initialise: model file missing"
    ):
        async with open_session(graph, registry):
            pytest.fail("the session must not start")


async def test_session_cleanup_runs_once_per_node_on_success_error_and_cancel(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    graph = graph_of(
        registry,
        [("t1", "Tracked", {}), ("bomb", "Boom", {}), ("t2", "Tracked", {})],
        [("t1", "bomb"), ("bomb", "t2")],
    )
    CLEANED.clear()
    await run_all(registry, graph, [Text("a")])
    assert sorted(CLEANED) == ["t1", "t2"]

    CLEANED.clear()
    with pytest.raises(NodeError):
        await run_all(registry, graph, [Text("boom")])
    assert sorted(CLEANED) == ["t1", "t2"]

    CLEANED.clear()
    with trio.move_on_after(5):
        async with open_session(graph, registry) as session:
            await session.send(Text("a"))
            await trio.sleep_forever()
    assert sorted(CLEANED) == ["t1", "t2"]


def _live_tasks() -> list[str]:
    root = trio.lowlevel.current_root_task()
    names: list[str] = []
    pending = [root]
    while pending:
        task = pending.pop()
        names.append(task.name)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return names


async def test_session_leaves_no_task_behind_after_close_error_or_cancel(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    graph = graph_of(
        registry,
        [("a", "PassThrough", {}), ("bomb", "Boom", {}), ("c", "Slow", {})],
        [("a", "bomb"), ("bomb", "c")],
    )
    before = _live_tasks()
    await run_all(registry, graph, [Text("x")])
    assert _live_tasks() == before

    with pytest.raises(NodeError):
        await run_all(registry, graph, [Text("x"), Text("boom")])
    assert _live_tasks() == before

    with trio.move_on_after(0.5):
        async with open_session(graph, registry) as session:
            await session.send(Text("x"))
            assert any(name == "node:c" for name in _live_tasks())
            await trio.sleep_forever()
    assert _live_tasks() == before


async def test_session_exit_without_eof_cancels_pending_work(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    graph = graph_of(registry, [("slow", "Slow", {"delay": 1000.0})], [])
    start = trio.current_time()
    async with open_session(graph, registry) as session:
        await session.send(Text("x"))
    assert trio.current_time() - start < 1.0


async def test_session_stats_count_inputs_outputs_and_busy_time(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    graph = graph_of(registry, [("rep", "Repeat", {"times": 3})], [])
    async with open_session(graph, registry) as session:
        for _ in range(5):
            await session.send(Text("x"))
        await session.send_eof()
        assert len([r async for r in session]) == 15
        stats = session.stats["rep"]
        assert (stats.inputs, stats.outputs) == (5, 15)
        assert stats.busy >= 0.0


async def test_session_node_that_cannot_be_created_is_a_node_error(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    graph = graph_of(registry, [("gpu", "BadCtor", {})], [])
    with pytest.raises(
        NodeError, match=r"Node 'gpu' \(BadCtor\) failed: could not be created: needs a GPU"
    ):
        async with open_session(graph, registry):
            pytest.fail("the session must not start")


async def test_session_flush_failure_is_a_node_error(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    graph = graph_of(registry, [("f", "BadFlush", {})], [])
    expected = r"Node 'f' \(BadFlush\) failed: flush failed: RuntimeError: lost the buffer"
    with pytest.raises(NodeError, match=expected):
        await run_all(registry, graph, [Text("x")])


async def test_session_working_names_the_node_on_the_oldest_input(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    graph = graph_of(
        registry,
        [("tag", "Tag", {}), ("slow", "Slow", {"delay": 100.0})],
        [("tag", "slow")],
    )
    async with open_session(graph, registry) as session:
        assert session.working() == []
        await session.send(Text("a"))
        await session.send(Text("b"))
        await trio.sleep(1)  # tag passed both on; slow sits on input #0
        assert session.working() == [(0, "slow")]
        await trio.sleep(100)  # now on input #1
        assert session.working() == [(1, "slow")]
        await trio.sleep(100)
        assert session.working() == []  # both done, every node waits for input


async def test_session_skips_an_interim_input_while_newer_input_waits(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    graph = graph_of(registry, [("asr", "Slow", {"delay": 1.0})], [])
    counted: list[tuple[str, str, int]] = []

    def interim(index: int) -> Audio:
        return Audio([0.1], 16_000, metadata={"interim": "u1", "index": index})

    async with open_session(graph, registry, count=lambda *c: counted.append(c)) as session:
        await session.send(interim(0))
        await trio.sleep(0.5)  # the node is busy with it...
        for index in (1, 2):  # ...so these two are superseded by the final one behind them
            await session.send(interim(index))
        await session.send(Audio([0.2], 16_000, metadata={"utterance": "u1"}))
        await trio.sleep(0.5)
        await session.send(interim(3))  # nothing waits behind this one: processed
        await session.send_eof()
        results = [r async for r in session]
    assert [r.data.metadata.get("index", "final") for r in results] == [0, "final", 3]
    assert counted == [("Slow", "interim_skipped", 1)] * 2


async def test_session_builds_a_nodes_child_and_reports_its_progress_and_counts(
    registry: NodeRegistry,
) -> None:
    graph = graph_of(registry, [("parent", "Parent", {})], [])
    counted: list[tuple[str, str, int]] = []
    statuses: list[tuple[str, str, str]] = []

    async def on_status(*status: str) -> None:
        statuses.append(status)

    CLEANED.clear()
    async with open_session(
        graph, registry, count=lambda *c: counted.append(c), on_status=on_status
    ) as session:
        await session.send(Text("hi"))
        await session.send_eof()
        results = [r async for r in session]
    assert [r.data for r in results] == [Text("hi>parent.tagger")]
    # Its progress is its parent's (the client hears of the node it knows);
    # its counts reach the metrics under its own type.
    assert ("parent", "initializing", "loading the child") in statuses
    assert statuses[-1] == ("parent", "ready", "Parent ready")
    assert counted == [("Counted", "tagged", 1)]
    assert CLEANED == ["parent.tagger"]


def test_a_node_outside_a_session_makes_its_children_in_process() -> None:
    child = Parent("parent", NoParams()).make_child("tagger", Counted, NoParams())
    assert type(child) is Counted
    assert child.node_id == "parent.tagger"


async def test_session_a_duplex_node_reports_a_failed_input_and_goes_on(
    registry: NodeRegistry,
) -> None:
    graph = graph_of(registry, [("parent", "Parent", {})], [])
    async with open_session(graph, registry) as session:
        for text in ("a", "refuse", "b"):
            await session.send(Text(text))
        await session.send_eof()
        results = [r async for r in session]
        stats = session.stats["parent"]
    assert [(r.sequence, r.data) for r in results if r.error is None] == [
        (0, Text("a>parent.tagger")),
        (2, Text("b>parent.tagger")),
    ]
    (failure,) = [r for r in results if r.error is not None]
    assert failure.sequence == 1
    assert str(failure.error) == (
        "Node 'parent' (Parent) failed while processing input #1: "
        "the text 'refuse' is refused; send any other"
    )
    assert stats.failures == 1


async def test_a_duplex_node_outside_a_session_raises_the_failed_input() -> None:
    with pytest.raises(NodeError, match=r"the text 'refuse' is refused"):
        await Parent("parent", NoParams()).input_failed("the text 'refuse' is refused")


async def test_session_times_each_inputs_queue_wait_and_processing(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    graph = graph_of(registry, [("slow", "Slow", {"delay": 1.0})], [])
    timed: list[tuple[str, float, float]] = []

    def time_nodes(node_type: str) -> Any:
        return lambda waited, took: timed.append((node_type, waited, took))

    async with open_session(
        graph, registry, time_nodes=time_nodes, clock=trio.current_time
    ) as session:
        for index in range(3):  # all three queued at once: each waits for those before it
            await session.send(Text(str(index)))
        await session.send_eof()
        assert len([r async for r in session]) == 3
    assert timed == [("Slow", 0.0, 1.0), ("Slow", 1.0, 1.0), ("Slow", 2.0, 1.0)]
