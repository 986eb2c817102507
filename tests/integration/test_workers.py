"""Nodes in worker processes: real subprocesses, real iceoryx2 shared memory."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from remotemedia import Audio, Json, NodeError, Text, builtin_registry
from remotemedia.executors.process import (
    PREFIX,
    ProcessNode,
    WorkerSettings,
    default_namespace,
    new_session_id,
    remove_dead_namespaces,
)
from remotemedia.executors.registry import Executor, ExecutorRegistry
from remotemedia.executors.reports import WorkerCall
from remotemedia.manifest import manifest_from_dict
from remotemedia.nodes import NodeRegistry, NoParams
from remotemedia.session import compile_graph, open_session
from remotemedia.session.session import CLEANUP_TIMEOUT
from tests.integration.worker_nodes import (
    BadInit,
    EnvironmentProbe,
    Generator,
    HangsAfterCrash,
    Hoarder,
    InPlaceProbe,
    Misbehaving,
    SlowLoader,
    SlowVoice,
    Splitter,
    Tally,
    VoiceOwner,
)
from tests.processes import worker_pids

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_leftover_workers")]


@pytest.fixture
def registry() -> NodeRegistry:
    registry = builtin_registry()
    for cls in (
        Misbehaving,
        Splitter,
        BadInit,
        SlowLoader,
        HangsAfterCrash,
        Hoarder,
        InPlaceProbe,
        EnvironmentProbe,
        Tally,
        VoiceOwner,
    ):
        registry.register(cls)
    return registry


def graph(registry: NodeRegistry, nodes: list[dict[str, Any]], edges: list[tuple[str, str]] = ()):  # type: ignore[assignment, no-untyped-def]
    document = {
        "version": "v1",
        "nodes": [{"executor": "process", **n} for n in nodes],
        "connections": [{"from": a, "to": b} for a, b in edges],
    }
    return compile_graph(manifest_from_dict(document), registry)


async def run(registry: NodeRegistry, g: Any, inputs: list[Any]) -> list[Any]:
    async with open_session(g, registry) as session, trio.open_nursery() as nursery:

        async def feed() -> None:
            for item in inputs:
                await session.send(item)
            await session.send_eof()

        nursery.start_soon(feed)
        return [r async for r in session]


async def test_worker_round_trips_audio_text_and_json(registry: NodeRegistry) -> None:
    g = graph(registry, [{"id": "w", "node_type": "PassThrough"}])
    audio = Audio(np.linspace(-1, 1, 640, dtype=np.float32), 16_000, 2, metadata={"k": 1})
    with trio.fail_after(20):
        results = await run(registry, g, [audio, Text("hi", channel="ui"), Json({"a": [1, 2]})])
    assert [r.sequence for r in results] == [0, 1, 2]
    echoed = results[0].data
    np.testing.assert_array_equal(echoed.samples, audio.samples)
    assert (echoed.sample_rate, echoed.channels, dict(echoed.metadata)) == (16_000, 2, {"k": 1})
    assert results[1].data == Text("hi", channel="ui")
    assert results[2].data == Json({"a": [1, 2]})


def _chunks(count: int) -> list[Audio]:
    # Every chunk differs from the others, so a sample overwritten by a later frame shows.
    return [Audio(np.full(320, i / 100, np.float32), 16_000) for i in range(count)]


async def test_worker_starts_with_its_node_types_environment(
    registry: NodeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The node type's variables are set before the worker imports anything; one the
    # server was started with (an operator's choice) wins over the node's.
    monkeypatch.setenv("REMOTEMEDIA_PROBE_OPERATOR", "operator")
    g = graph(registry, [{"id": "probe", "node_type": "EnvironmentProbe"}])
    with trio.fail_after(20):
        (result,) = await run(registry, g, [Text("?")])
    assert result.data.value == {
        "REMOTEMEDIA_PROBE_DECLARED": "node",
        "REMOTEMEDIA_PROBE_OPERATOR": "operator",
    }


async def test_worker_reads_audio_in_place_from_shared_memory(registry: NodeRegistry) -> None:
    g = graph(registry, [{"id": "probe", "node_type": "InPlaceProbe"}])
    chunks = _chunks(40)
    with trio.fail_after(20):
        results = await run(registry, g, chunks)
    assert [r.data.value["in_place"] for r in results] == [True] * 40
    # Read in place, yet each input is its own: the memory of one is not another's.
    assert [r.data.value["sum"] for r in results] == [float(c.samples.sum()) for c in chunks]


async def test_worker_node_keeping_its_inputs_keeps_them_intact(registry: NodeRegistry) -> None:
    # The node keeps views of its inputs. The first input's shared memory stays
    # held for it; the rest are copied, so no kept view ever sees a later frame.
    g = graph(registry, [{"id": "hoard", "node_type": "Hoarder"}])
    chunks = _chunks(40)  # more than the subscriber's buffer: the memory is reused
    with trio.fail_after(20):
        results = await run(registry, g, chunks)
    answers = [r.data.value["in_place"] for r in results[:-1]]
    assert answers == [True] + [False] * 39
    joined = results[-1].data.samples
    np.testing.assert_array_equal(joined, np.concatenate([c.samples[1:] for c in chunks]))


async def test_worker_streams_many_outputs_and_flushes_at_end(registry: NodeRegistry) -> None:
    g = graph(
        registry,
        [
            {"id": "split", "node_type": "Splitter"},
            {"id": "collect", "node_type": "TextCollectorNode"},
        ],
        [("split", "collect")],
    )
    words = " ".join(f"word{i}" for i in range(40)) + ". tail without end"
    with trio.fail_after(20):
        results = await run(registry, g, [Text(words)])
    texts = [r.data.text for r in results]
    # 40+ outputs from one input pass through the credit-based flow control.
    assert texts[-1] == "tail without end"  # the worker's flush reached the collector
    assert texts[0].startswith("word0 word1")


async def test_worker_node_error_names_the_node_and_input(registry: NodeRegistry) -> None:
    g = graph(registry, [{"id": "m", "node_type": "Misbehaving", "params": {"fail_on": "bad"}}])
    with trio.fail_after(20), pytest.raises(NodeError) as caught:
        await run(registry, g, [Text("ok"), Text("bad")])
    assert (caught.value.node_id, caught.value.sequence) == ("m", 1)
    assert "asked to fail on 'bad'" in str(caught.value)


async def test_worker_killed_mid_input_is_reported_and_the_session_goes_on(
    registry: NodeRegistry,
) -> None:
    g = graph(registry, [{"id": "m", "node_type": "Misbehaving", "params": {"die_on": "die"}}])
    counted: list[tuple[str, str, int]] = []
    with trio.fail_after(30):
        async with (
            open_session(g, registry, count=lambda *c: counted.append(c)) as session,
            trio.open_nursery() as nursery,
        ):

            async def feed() -> None:
                for text in ("before", "die", "after"):
                    await session.send(Text(text))
                await session.send_eof()

            nursery.start_soon(feed)
            results = [r async for r in session]
    assert counted == [("Misbehaving", "worker_restarted", 1)]  # for the metrics
    assert [(r.sequence, r.error is None) for r in results] == [(0, True), (1, False), (2, True)]
    failure = results[1].error
    assert failure is not None
    assert failure.node_id == "m"
    assert "the worker process died while processing: it was killed by SIGKILL" in str(failure)
    assert "a new worker takes the next input" in str(failure)
    assert "lost the text 'die'" in str(failure)  # which input, in the user's terms
    before, after = (r.data.text.split(":")[1] for r in (results[0], results[2]))
    assert before != after  # a new worker process took over


async def test_worker_that_hangs_is_killed_and_replaced(registry: NodeRegistry) -> None:
    g = graph(registry, [{"id": "m", "node_type": "Misbehaving", "params": {"hang_on": "hang"}}])
    settings = WorkerSettings(default_namespace(), call_timeout=1.0, stop_grace=0.5)
    with trio.fail_after(30):
        async with open_session(g, registry, workers=settings) as session:
            for text in ("hang", "next"):
                await session.send(Text(text))
            await session.send_eof()
            results = [r async for r in session]
    assert results[0].error is not None
    assert "made no progress for 1 s (hung)" in str(results[0].error)
    assert results[1].data is not None
    assert results[1].data.text.startswith("next:")


async def test_worker_that_fails_to_initialise_reports_why(registry: NodeRegistry) -> None:
    g = graph(
        registry, [{"id": "b", "node_type": "BadInitWorker", "params": {"reason": "weights.bin"}}]
    )
    with (
        trio.fail_after(20),
        pytest.raises(NodeError, match=r"did not start: FileNotFoundError: weights\.bin"),
    ):
        async with open_session(g, registry):
            pytest.fail("the session must not start")


async def test_worker_progress_reaches_the_status_callback(registry: NodeRegistry) -> None:
    g = graph(registry, [{"id": "s", "node_type": "SlowLoader"}])
    seen: list[tuple[str, str, str]] = []

    async def on_status(node_id: str, status: str, message: str) -> None:
        seen.append((node_id, status, message))

    with trio.fail_after(20):
        async with open_session(g, registry, on_status=on_status):
            pass
    assert [(status, message) for _, status, message in seen] == [
        ("initializing", "Initializing SlowLoader"),
        ("initializing", "loading weights"),
        ("initializing", "warming up"),
        ("ready", "SlowLoader ready"),
    ]
    assert {node_id for node_id, _, _ in seen} == {"s"}


async def test_cancelling_a_session_stops_a_hung_worker(
    registry: NodeRegistry, tmp_path: Path
) -> None:
    hanging = tmp_path / "hanging"
    params = {"hang_on": "hang", "hanging": str(hanging)}
    g = graph(registry, [{"id": "m", "node_type": "Misbehaving", "params": params}])

    async def cancel_once_hung(scope: trio.CancelScope) -> None:
        while not hanging.exists():  # noqa: ASYNC110 - a file the worker process creates
            await trio.sleep(0.01)
        scope.cancel()

    with trio.fail_after(20):
        with trio.CancelScope() as scope:
            async with open_session(g, registry) as session, trio.open_nursery() as nursery:
                await session.send(Text("hang"))
                nursery.start_soon(cancel_once_hung, scope)
                await session.receive()
        assert scope.cancelled_caught
    # no_leftover_workers checks the worker is gone and the shared memory released.


async def test_session_teardown_holds_its_deadline_against_a_worker_ignoring_sigterm(
    registry: NodeRegistry, tmp_path: Path
) -> None:
    """A worker deaf to its socket and to SIGTERM is SIGKILLed within the session's cleanup
    deadline, even when its stop grace alone would take far longer."""
    hanging = tmp_path / "hanging"
    params = {"block_on": "block", "hanging": str(hanging), "ignore_sigterm": True}
    g = graph(registry, [{"id": "m", "node_type": "Misbehaving", "params": params}])
    settings = WorkerSettings(default_namespace(), stop_grace=60.0)

    async def cancel_once_blocked(scope: trio.CancelScope) -> None:
        while not hanging.exists():  # noqa: ASYNC110 - a file the worker process creates
            await trio.sleep(0.01)
        scope.cancel()

    with trio.fail_after(CLEANUP_TIMEOUT + 5):
        with trio.CancelScope() as scope:
            async with (
                open_session(g, registry, workers=settings) as session,
                trio.open_nursery() as nursery,
            ):
                await session.send(Text("block"))
                nursery.start_soon(cancel_once_blocked, scope)
                await session.receive()
        assert scope.cancelled_caught
    # no_leftover_workers checks the worker is gone and the shared memory released.


async def test_circuit_breaker_refuses_workers_after_five_failures(
    registry: NodeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("remotemedia.executors.breakers._BREAKERS", {})
    g = graph(registry, [{"id": "b", "node_type": "BadInitWorker"}])
    with trio.fail_after(60):
        for _ in range(5):
            with pytest.raises(NodeError, match="did not start"):
                async with open_session(g, registry):
                    pass
        with pytest.raises(
            NodeError, match=r"failed 5 times in a row, so none is started for 3\d s"
        ):
            async with open_session(g, registry):
                pass


async def test_worker_crashing_on_every_input_opens_the_breaker(
    registry: NodeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("remotemedia.executors.breakers._BREAKERS", {})
    g = graph(registry, [{"id": "m", "node_type": "Misbehaving", "params": {"die_on": "x"}}])
    results = []

    async def crash_repeatedly() -> None:
        async with open_session(g, registry) as session:
            for _ in range(7):
                await session.send(Text("x"))
                results.append(await session.receive())

    with trio.fail_after(60), pytest.raises(NodeError, match="circuit breaker open") as caught:
        await crash_repeatedly()
    # Each replacement started fine, but five failures in a row still open the breaker.
    assert len(results) == 5
    assert all("killed by SIGKILL" in str(r.error) for r in results)
    assert caught.value.node_id == "m"


async def test_restart_that_hangs_while_loading_fails_the_node_in_bounded_time(
    registry: NodeRegistry, tmp_path: Path
) -> None:
    marker = str(tmp_path / "crashed")
    g = graph(registry, [{"id": "h", "node_type": "HangsAfterCrash", "params": {"marker": marker}}])
    # Long enough for a first start on a loaded machine, short enough for the test.
    settings = WorkerSettings(default_namespace(), start_timeout=3, stop_grace=0.2)

    async def crash_then_send() -> None:
        async with open_session(g, registry, workers=settings) as session:
            await session.send(Text("die"))
            lost = await session.receive()
            assert lost.error is not None
            await session.send(Text("next"))
            await session.receive()

    with trio.fail_after(30), pytest.raises(NodeError) as caught:
        await crash_then_send()
    assert "did not become ready within 3 s" in str(caught.value)
    assert "restarting it failed 3 times" in str(caught.value)


async def kill_the_idle_worker() -> int:
    """SIGKILL the session's only worker (ready, no input yet) and wait for its death."""
    (pid,) = worker_pids()
    pidfd = os.pidfd_open(pid)
    try:
        os.kill(pid, signal.SIGKILL)
        await trio.lowlevel.wait_readable(pidfd)  # readable once the process has exited
    finally:
        os.close(pidfd)
    return pid


async def test_worker_that_died_while_idle_is_replaced_without_losing_the_next_input(
    registry: NodeRegistry,
) -> None:
    g = graph(registry, [{"id": "m", "node_type": "Misbehaving"}])
    with trio.fail_after(30):
        async with open_session(g, registry) as session:
            killed = await kill_the_idle_worker()
            await session.send(Text("two"))
            second = await session.receive()
            await session.send_eof()
            rest = [r async for r in session]
    assert second.error is None
    assert second.data is not None
    assert second.data.text.startswith("two:")
    assert second.data.text != f"two:{killed}"  # a new process took it
    assert rest == []


async def test_worker_dying_before_the_flush_is_reported_and_the_session_ends_cleanly(
    registry: NodeRegistry,
) -> None:
    g = graph(registry, [{"id": "m", "node_type": "Misbehaving"}])
    with trio.fail_after(30):
        async with open_session(g, registry) as session:
            await kill_the_idle_worker()
            await session.send_eof()
            rest = [r async for r in session]
    (failure,) = rest
    assert failure.node_id == "m"
    assert "flush failed: the worker process exited while idle" in str(failure.error)


async def test_a_megabyte_of_params_reaches_the_worker(registry: NodeRegistry) -> None:
    payload = "p" * 1_000_000
    g = graph(
        registry, [{"id": "h", "node_type": "HangsAfterCrash", "params": {"payload": payload}}]
    )
    with trio.fail_after(30):
        (result,) = await run(registry, g, [Text("size?")])
    assert result.data.text.startswith("1000000:")


def test_root_folder_of_a_dead_server_is_removed_even_without_shm_files() -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    root = Path(tempfile.gettempdir()) / f"{PREFIX}{int(dead.stdout)}"
    (root / "leftover").mkdir(parents=True)
    assert remove_dead_namespaces() >= 1
    assert not root.exists()


async def test_worker_over_its_memory_budget_is_replaced_between_inputs(
    registry: NodeRegistry,
) -> None:
    g = graph(registry, [{"id": "m", "node_type": "Misbehaving"}])
    settings = WorkerSettings(default_namespace(), max_rss_mb=1)  # every Python is bigger
    with trio.fail_after(30):
        async with open_session(g, registry, workers=settings) as session:
            for text in ("one", "two"):
                await session.send(Text(text))
            await session.send_eof()
            results = [r async for r in session]
    assert [r.error for r in results] == [None, None]
    pids = [r.data.text.split(":")[1] for r in results]
    assert pids[0] != pids[1]  # a fresh worker took the second input


async def test_each_input_through_a_worker_is_reported_with_the_nodes_own_work(
    registry: NodeRegistry,
) -> None:
    g = graph(registry, [{"id": "w", "node_type": "PassThrough"}])
    calls: list[WorkerCall] = []
    with trio.fail_after(20):
        async with open_session(g, registry, worker_calls=calls.append) as session:
            for index in range(3):
                await session.send(Text(str(index)))
            running = worker_pids()
            await session.send_eof()
            assert len([r async for r in session]) == 3
    assert [(c.node_id, c.node_type, c.flush) for c in calls] == [
        ("w", "PassThrough", False),
        ("w", "PassThrough", False),
        ("w", "PassThrough", False),
        ("w", "PassThrough", True),  # the flush at end of input
    ]
    for call in calls:
        assert call.pid in running
        assert call.worked_ns is not None
        started, ended = call.worked_ns
        # One host, one wall clock: the worker began after the input was sent, and its
        # work fits in the round trip the runtime measured (perf_counter: a few
        # microseconds of skew between the two clocks are allowed).
        assert call.sent <= started <= ended
        assert (ended - started) / 1e9 <= call.round_trip + 1e-3
        assert call.hop is not None
        assert 0 <= call.hop <= call.round_trip


# Ids that validation accepts but iceoryx2 would refuse in its names (non-ASCII, longer
# than its 128-character node names), and ids that differ only in what a name must
# drop or cut: each needs shared-memory names of its own, in the same session.
UNUSUAL_IDS = ("ノード🎤", "x" * 300, "x" * 299 + "y", "ü", "ö", "a/b c.d:e", "👨\u200d👩\u200d👧")


async def test_worker_nodes_run_under_any_valid_id(registry: NodeRegistry) -> None:
    g = graph(
        registry,
        [{"id": node_id, "node_type": "PassThrough"} for node_id in UNUSUAL_IDS],
        list(itertools.pairwise(UNUSUAL_IDS)),
    )
    with trio.fail_after(60):
        (result,) = await run(registry, g, [Text("through every worker")])
    assert (result.node_id, result.data) == (UNUSUAL_IDS[-1], Text("through every worker"))
    # no_leftover_workers checks every worker is gone and its shared memory released.


async def test_what_a_worker_node_counts_reaches_the_sessions_metrics(
    registry: NodeRegistry,
) -> None:
    g = graph(registry, [{"id": "tally", "node_type": "Tally"}])
    counted: list[tuple[str, str, int]] = []
    with trio.fail_after(20):
        async with open_session(g, registry, count=lambda *c: counted.append(c)) as session:
            for index in range(3):
                await session.send(Text(str(index)))
            await session.send_eof()
            results = [r async for r in session]
    assert len(results) == 3
    totals: dict[str, int] = {}
    for node_type, event, amount in counted:
        assert node_type == "Tally"
        totals[event] = totals.get(event, 0) + amount
    assert totals == {"seen": 3, "in_a_thread": 6}


async def test_a_nodes_child_runs_in_a_worker_of_its_own_where_the_registry_says(
    registry: NodeRegistry,
) -> None:
    document = {"version": "v1", "nodes": [{"id": "owner", "node_type": "VoiceOwner"}]}
    g = compile_graph(manifest_from_dict(document), registry)
    executors = ExecutorRegistry(explicit={"SlowVoice": Executor.PROCESS})
    counted: list[tuple[str, str, int]] = []
    with trio.fail_after(20):
        async with open_session(
            g, registry, executors=executors, count=lambda *c: counted.append(c)
        ) as session:
            await session.send(Text("hi"))
            await session.send_eof()
            said, where = [r.data for r in [r async for r in session]]
    pid = where.value["voice_pid"]
    assert pid is not None
    assert pid != os.getpid()
    assert said == Text(f"hi:{pid}")
    assert counted == [("SlowVoice", "spoke", 1)]
    # no_leftover_workers: the owner's cleanup stopped its child's worker.


async def test_an_abandoned_input_stops_the_node_in_the_worker_at_once() -> None:
    node = ProcessNode(
        "generator",
        NoParams(),
        node_class=Generator,
        raw_params={},
        session_id=new_session_id(),
        settings=WorkerSettings(default_namespace()),
    )
    with trio.fail_after(30):
        try:
            await node.initialize()
            pid = node.pid
            # 200 pieces are 10 s of work; the caller wants 3 (a barge-in cuts a reply).
            taken = []
            async with contextlib.aclosing(node.process(Text("200"))) as outputs:
                async for item in outputs:
                    taken.append(item)
                    if len(taken) == 3:
                        break
            cut = trio.current_time()
            # The next input waits only for the node to notice the stop, not for the
            # 197 pieces left: the worker was told, and stopped generating.
            assert [item async for item in node.process(Text("1"))] == [Text("0")]
            assert trio.current_time() - cut < 2.0
            assert taken == [Text("0"), Text("1"), Text("2")]
            assert node.counts["stopped"] == 1  # the node's own work was cut short
            assert node.counts["abandoned_input"] == 1
            assert (node.pid, node.restarts) == (pid, 0)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await node.cleanup()


async def test_an_input_abandoned_mid_way_leaves_the_worker_serving_the_next_one() -> None:
    node = ProcessNode(
        "voice",
        NoParams(),
        node_class=SlowVoice,
        raw_params={},
        session_id=new_session_id(),
        settings=WorkerSettings(default_namespace()),
    )
    with trio.fail_after(30):
        try:
            await node.initialize()
            pid = node.pid
            # Cut while the caller holds an output (a barge-in during playback)...
            with trio.CancelScope() as scope:
                async with contextlib.aclosing(node.process(Text("slow"))) as outputs:
                    async for item in outputs:
                        assert item == Text("early")
                        scope.cancel()
                        cut = trio.current_time()
                        await trio.lowlevel.checkpoint()
            # ...the caller did not wait for the worker's second output (a second away).
            assert trio.current_time() - cut < 0.2
            # The next input gets its own answer, not the cut one's, from the same worker.
            assert [item async for item in node.process(Text("next"))] == [Text(f"next:{pid}")]
            # Cut while waiting for the worker (mid-synthesis), the same.
            with trio.move_on_after(0.3):
                async for item in node.process(Text("slow")):
                    assert item == Text("early")
            assert [item async for item in node.process(Text("again"))] == [Text(f"again:{pid}")]
            assert (node.pid, node.restarts) == (pid, 0)
            assert node.counts["abandoned_input"] == 2
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await node.cleanup()
