"""Worker faults seen through the gRPC service: real server, real Whisper workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
import trio
import yaml

from remotemedia import Audio, Json, ServerError
from remotemedia.cli.run import split_chunks
from remotemedia.client import open_trio_client
from remotemedia.config import ServerConfig
from remotemedia.examples import example_path
from remotemedia.executors.process import PREFIX, default_namespace, remove_dead_namespaces
from remotemedia.faults import Action, ActionKind, Fault, FaultPlan, Site
from remotemedia.ipc.shm import SHM_DIR
from remotemedia.session import Result
from remotemedia.testing import SpeechSample, synthesize_speech, word_error_rate
from remotemedia.testing.seams import FaultSwitch
from remotemedia.transport.serving import serve
from tests.processes import children_of, server_process, worker_pids

pytestmark = pytest.mark.slow

SENTENCES = (
    "The first sentence comes before the crash.",
    "The second sentence may be lost.",
    "The third sentence arrives after the restart.",
    "A fourth sentence proves the session goes on.",
)


@pytest.fixture(scope="module")
def speech() -> SpeechSample:
    return synthesize_speech(SENTENCES, gap_s=1.2, lead_s=0.3, tail_s=1.0)


def _victim_manifest() -> dict[str, Any]:
    """The bundled transcribe pipeline with its Whisper node renamed, so that a fault
    plan can single out this session's node; without speculation, so that Whisper's
    second input is the second sentence."""
    document: dict[str, Any] = yaml.safe_load(example_path("transcribe").read_text())
    rename = {"whisper": VICTIM}
    for node in document["nodes"]:
        node["id"] = rename.get(node["id"], node["id"])
        if node["id"] == "vad":
            node["params"]["speculative_silence_ms"] = 0
    for connection in document.get("connections", []):
        for end in ("from", "to"):
            connection[end] = rename.get(connection[end], connection[end])
    return document


VICTIM = "victim_whisper"


async def stream(
    address: str,
    audio: Audio,
    on_chunk: Callable[[int], Awaitable[None]] | None = None,
    ready: trio.Event | None = None,
    manifest: str | dict[str, Any] = "transcribe",
) -> list[Result]:
    """Stream ``audio`` in 20 ms chunks (at most 10x real time); the session's results.

    ``on_chunk(index)`` runs after each chunk is sent; ``ready`` is set once the server
    sent ``ready`` (the session's workers run).
    """
    results: list[Result] = []
    async with open_trio_client(address) as client, client.stream(manifest) as session:
        if ready is not None:
            ready.set()

        async def feed() -> None:
            try:
                for index, chunk in enumerate(split_chunks(audio, 20.0)):
                    await session.send(chunk)
                    if on_chunk is not None:
                        await on_chunk(index)
                    await trio.sleep(0.002)
                await session.close()
            except ServerError:
                return  # the server ended the session (a drain); the reader sees why

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            results = [r async for r in session]
    return results


async def test_sigkilled_whisper_worker_gives_a_typed_error_and_the_session_goes_on(
    speech: SpeechSample,
) -> None:
    # The victim's worker is held for 4 s at the start of its second input (the
    # second sentence; a fault plan delay at the real seam, inside the worker), and
    # killed from outside meanwhile: the kill lands while the input is in its hands.
    plan = FaultPlan(
        (Fault(Site.NODE_PROCESS, 2, Action(ActionKind.DELAY, delay_ms=4000), VICTIM),)
    )
    shutdown = trio.Event()
    switch = FaultSwitch()
    with trio.fail_after(120), switch.install(plan) as counter:
        async with trio.open_nursery() as nursery:
            config = ServerConfig(bind="127.0.0.1:0")
            server = await nursery.start(partial(serve, seams=switch.seams), config, shutdown)
            address = f"{server.host}:{server.port}"
            existing = worker_pids()
            killed: list[int] = []

            async def kill(index: int) -> None:
                if killed or not counter.fired:
                    return  # the second input has not gone to the worker yet
                (victim,) = (pid for pid in worker_pids() if pid not in before)
                await trio.sleep(0.5)  # it has the input: well inside its 4 s hold
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

            async def bystander() -> None:
                other.extend(await stream(address, speech.audio, ready=bystander_ready))
                bystander_done.set()

            other: list[Result] = []
            bystander_ready, bystander_done = trio.Event(), trio.Event()
            nursery.start_soon(bystander)
            # The bystander's worker runs before the victim's session starts: the
            # victim's worker is then the one that is new.
            await bystander_ready.wait()
            before = worker_pids()
            victim_results = await stream(address, speech.audio, kill, manifest=_victim_manifest())
            await bystander_done.wait()
            shutdown.set()

    assert killed, "no worker was killed"
    failures = [r for r in victim_results if r.error is not None]
    transcripts = [r.data.value["text"] for r in victim_results if isinstance(r.data, Json)]
    assert len(failures) == 1
    assert failures[0].node_id == VICTIM
    assert "killed by SIGKILL" in str(failures[0].error)
    assert "lost the utterance at" in str(failures[0].error)  # the words that are missing
    # The session went on: the sentences after the crash were transcribed.
    assert word_error_rate(SENTENCES[2], transcripts[-2]) <= 0.3
    assert word_error_rate(SENTENCES[3], transcripts[-1]) <= 0.3
    # The other session never noticed.
    other_texts = [r.data.value["text"] for r in other if isinstance(r.data, Json)]
    assert [r for r in other if r.error is not None] == []
    assert len(other_texts) == len(SENTENCES)
    assert worker_pids() <= existing  # every worker of both sessions is gone
    assert default_namespace().files() == []  # and their shared memory


def test_next_start_removes_shared_memory_left_by_a_killed_server(speech: SpeechSample) -> None:
    code = (
        "import trio, sys\n"
        "from remotemedia import open_pipeline, Audio\n"
        "import numpy as np\n"
        "async def main():\n"
        "    async with open_pipeline({'version': 'v1', 'nodes': [{'id': 'w', 'node_type': "
        "'PassThrough', 'executor': 'process'}]}) as p:\n"
        "        await p.send(Audio(np.zeros(320, np.float32), 16000)); await p.receive()\n"
        "        print('ready', flush=True); await trio.sleep_forever()\n"
        "trio.run(main)\n"
    )
    with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        prefix = f"{PREFIX}{child.pid}_"
        assert any(name.startswith(prefix) for name in os.listdir(SHM_DIR))
        child.kill()  # no cleanup runs; its worker dies with it (PDEATHSIG)
        child.wait()
    assert remove_dead_namespaces() >= 1
    assert not any(name.startswith(prefix) for name in os.listdir(SHM_DIR))


def _files_of(pid: int, *, shared_too: bool = False) -> list[str]:
    """The server's files in /dev/shm (the namespace's global segment only if asked)."""
    return [
        name
        for name in os.listdir(SHM_DIR)
        if name.startswith(f"{PREFIX}{pid}_") and (shared_too or "global_mgmt" not in name)
    ]


async def _until(condition: Callable[[], bool]) -> None:
    """Wait for a condition on another process (which offers no event), checking at 20 Hz."""
    for _ in range(1200):
        if condition():
            return
        await trio.sleep(0.05)
    raise AssertionError("the condition did not come true within 60 s")


async def test_server_sigterm_and_client_disconnect_leave_no_worker_or_shared_memory(
    speech: SpeechSample,
) -> None:
    with trio.fail_after(60):
        async with server_process() as (process, address, _):
            # 1. A client that disconnects mid-stream (the first sentence sent, its
            # session's worker running): the worker goes.
            middle = int((speech.segments[0].end_ms + 600) / 20)
            workers: list[int] = []

            async def disconnect(index: int) -> None:
                if index == middle:
                    workers.extend(children_of(process.pid))
                    gone.cancel()

            with trio.CancelScope() as gone:
                await stream(address, speech.audio, disconnect)
            assert workers, "the session's worker was not running"
            # The worker exits before the session's teardown drops the runtime's
            # ports, so the files go a moment after it: wait for both.
            await _until(lambda: not children_of(process.pid) and not _files_of(process.pid))
            # 2. SIGTERM with a live session: workers and shared memory go, exit 0.
            streaming = trio.Event()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(stream, address, speech.audio, ready=streaming))
                await streaming.wait()  # past initialisation: the session is streaming
                assert children_of(process.pid), "the session's worker is not running"
                process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    assert _files_of(process.pid, shared_too=True) == []
