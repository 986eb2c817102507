"""Worker faults seen through the gRPC service: real server, real Whisper workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import pytest
import trio

from remotemedia import Audio, Json, ServerError
from remotemedia.cli.run import split_chunks
from remotemedia.client import open_trio_client
from remotemedia.config import ServerConfig
from remotemedia.executors.process import PREFIX, default_namespace, remove_dead_namespaces
from remotemedia.ipc.shm import SHM_DIR
from remotemedia.session import Result
from remotemedia.testing import SpeechSample, synthesize_speech, word_error_rate
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


def cpu_ticks(pid: int) -> int:
    """User + system CPU time of a process, in clock ticks (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


async def stream(
    address: str,
    audio: Audio,
    on_chunk: Callable[[int], Awaitable[None]] | None = None,
    ready: trio.Event | None = None,
) -> list[Result]:
    """Stream ``audio`` in 20 ms chunks (at most 10x real time); the session's results.

    ``on_chunk(index)`` runs after each chunk is sent; ``ready`` is set once the server
    sent ``ready`` (the session's workers run).
    """
    results: list[Result] = []
    async with open_trio_client(address) as client, client.stream("transcribe") as session:
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
    shutdown = trio.Event()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve, ServerConfig(bind="127.0.0.1:0"), shutdown)
            address = f"{server.host}:{server.port}"
            existing = worker_pids()
            killed: list[int] = []
            # Kill the victim session's worker while it transcribes the second sentence:
            # after that sentence's audio was sent, as soon as the worker burns CPU (it
            # idles until an utterance arrives, and an idle death loses nothing). The
            # feed checks after every chunk; at the last chunk before the third sentence
            # (the VAD has ended the second utterance by then) it waits until it can kill.
            after = int((speech.segments[1].end_ms + 200) / 20)
            last = int((speech.segments[2].start_ms - 100) / 20)
            baseline: list[int] = []

            async def kill(index: int) -> None:
                if index < after or killed:
                    return
                (victim,) = (pid for pid in worker_pids() if pid not in before)
                if not baseline:
                    baseline.append(cpu_ticks(victim))
                # >= 20 ms of CPU since the second sentence ended: transcribing it.
                while cpu_ticks(victim) - baseline[0] < 2:
                    if index < last:
                        return
                    await trio.sleep(0.01)  # poll another process's CPU time
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
            victim_results = await stream(address, speech.audio, kill)
            await bystander_done.wait()
            shutdown.set()

    assert killed, "no worker was killed"
    failures = [r for r in victim_results if r.error is not None]
    transcripts = [r.data.value["text"] for r in victim_results if isinstance(r.data, Json)]
    assert len(failures) == 1
    assert failures[0].node_id == "whisper"
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
