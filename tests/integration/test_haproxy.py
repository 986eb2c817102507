"""Three `remotemedia serve` replicas behind real HAProxy, running deploy/haproxy/haproxy.cfg.

What a user behind an L7 balancer relies on: calls of one client connection spread
over every replica; a replica that drains leaves rotation while its own sessions
finish and everyone else's go on; a replica that dies takes only its own sessions
with it; unary calls and auth tokens pass through.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import attrs
import numpy as np
import pytest
import trio

from remotemedia import Audio, Json, Text
from remotemedia.client import ServerError, open_trio_client
from remotemedia.client.client import TrioClient
from remotemedia.executors.namespace import PREFIX
from remotemedia.ipc.shm import SHM_DIR
from tests.processes import children_of, free_port, require_program, server_process

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "haproxy.cfg"
TOKEN = "balancer-token"
REPLICA_FLAGS = (
    *("--auth-token", TOKEN, "--drain-delay", "3", "--drain-timeout", "10"),
    *("--executor", "Echo=process"),  # a session with a worker process: Echo
)
CHUNK = Audio(np.zeros(320, np.float32), 16_000)
IN_A_WORKER = {"version": "v1", "nodes": [{"id": "echo", "node_type": "Echo"}]}


def _dechunked(body: bytes) -> bytes:
    """An HTTP/1.1 chunked body's bytes (HAProxy answers so even to HTTP/1.0)."""
    data = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        data, body = data + body[:size], body[size + 2 :]
    return data


@attrs.define
class Cluster:
    """The replicas (process, address) and the balancer in front of them."""

    replicas: list[tuple[trio.Process, str]]
    address: str  # the balancer's
    stats: str  # host:port of its stats page
    stack: AsyncExitStack

    @property
    def pids(self) -> list[int]:
        return [process.pid for process, _ in self.replicas]

    async def server_states(self) -> dict[str, str]:
        """HAProxy's view: replica name -> UP, DOWN, ..."""
        host, port = self.stats.rsplit(":", 1)
        async with await trio.open_tcp_stream(host, int(port)) as stream:
            await stream.send_all(b"GET /stats;csv HTTP/1.0\r\n\r\n")
            body = b""
            while chunk := await stream.receive_some(65536):
                body += chunk
        text = _dechunked(body.split(b"\r\n\r\n", 1)[1]).decode().lstrip("# ")
        return {
            row["svname"]: row["status"]
            for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == "remotemedia" and row["svname"].startswith("replica")
        }

    async def wait_states(self, wanted: dict[str, str]) -> None:
        """Wait until HAProxy sees each named replica in the wanted state (UP, DOWN)."""
        while True:
            try:
                states = await self.server_states()
            except OSError:  # HAProxy is still starting
                states = {}
            if all(states.get(name, "").startswith(state) for name, state in wanted.items()):
                return
            await trio.sleep(0.1)  # HAProxy has no notification to wait on

    async def restart(self, index: int) -> trio.Process:
        """Start a replica again on the address of replica ``index`` (a dead one)."""
        host, port = self.replicas[index][1].rsplit(":", 1)
        process, address, _ = await self.stack.enter_async_context(
            server_process(*REPLICA_FLAGS, bind=f"{host}:{port}")
        )
        self.replicas[index] = (process, address)
        return process


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    haproxy = require_program("haproxy", "the load balancer tests run real HAProxy")
    async with AsyncExitStack() as stack:
        replicas = []
        for _ in range(3):
            process, address, _ = await stack.enter_async_context(server_process(*REPLICA_FLAGS))
            replicas.append((process, address))
        bind, stats = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        env = {
            **os.environ,
            "REMOTEMEDIA_LB_BIND": bind,
            "REMOTEMEDIA_LB_STATS": stats,
            **{f"REMOTEMEDIA_REPLICA_{i + 1}": address for i, (_, address) in enumerate(replicas)},
        }
        log = stack.enter_context((tmp_path / "haproxy.log").open("wb"))
        balancer = await trio.lowlevel.open_process(
            [haproxy, "-db", "-f", str(CONFIG)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            cluster = Cluster(replicas, bind, stats, stack)
            with trio.fail_after(20):
                await cluster.wait_states({f"replica{i}": "UP" for i in (1, 2, 3)})
            yield cluster
        finally:
            with trio.CancelScope(shield=True):
                balancer.terminate()
                await balancer.wait()


@attrs.define
class Live:
    """What happened to one long session: where it ran and how it ended."""

    server: str = ""
    results: int = 0
    closed: str | None = None
    error: str | None = None


async def _live_session(
    client: TrioClient, live: Live, opened: trio.Semaphore, poke: trio.Event
) -> None:
    """A session that stays open: one chunk, then (once poked) one more and a close."""
    try:
        async with client.stream("passthrough") as stream:
            live.server = stream.handle.server
            await stream.send(CHUNK)
            async with trio.open_nursery() as nursery:

                async def read() -> None:
                    try:
                        async for _ in stream:
                            live.results += 1
                            if live.results == 1:
                                opened.release()
                    except ServerError as error:  # its replica died
                        live.error = str(error)
                    else:
                        assert stream.handle.closed is not None
                        live.closed = stream.handle.closed.reason
                    nursery.cancel_scope.cancel()

                nursery.start_soon(read)
                await poke.wait()
                await stream.send(CHUNK)
                await stream.close()
    except ServerError as error:  # leaving a stream whose replica died says so too
        live.error = live.error or str(error)


async def _one_session(client: TrioClient) -> str:
    """A short session; the server that served it."""
    async with client.stream("passthrough") as stream:
        await stream.send(Text("hi"))
        await stream.close()
        results = [result async for result in stream]
        assert [r.data for r in results] == [Text("hi")]
        return stream.handle.server


@asynccontextmanager
async def _live_sessions(
    client: TrioClient, count: int
) -> AsyncIterator[tuple[list[Live], trio.Event]]:
    """``count`` live sessions, all past their first result; poke them to finish."""
    lives = [Live() for _ in range(count)]
    opened, poke = trio.Semaphore(0), trio.Event()
    async with trio.open_nursery() as nursery:
        for live in lives:
            nursery.start_soon(_live_session, client, live, opened, poke)
        for _ in lives:
            await opened.acquire()
        yield lives, poke
        poke.set()


def _pid_of(server: str) -> int:
    return int(server.rsplit("/", 1)[1])


async def test_streams_of_one_connection_spread_over_every_replica(cluster: Cluster) -> None:
    served: Counter[int] = Counter()
    with trio.fail_after(60):
        async with (
            open_trio_client(cluster.address, token=TOKEN) as client,  # one connection
            trio.open_nursery() as nursery,
        ):

            async def one() -> None:
                served[_pid_of(await _one_session(client))] += 1

            for _ in range(60):
                nursery.start_soon(one)
    assert set(served) == set(cluster.pids)
    assert min(served.values()) >= 10, served


async def test_sigterm_drains_one_replica_and_the_others_serve_on(cluster: Cluster) -> None:
    victim = cluster.replicas[0][0]
    failures: list[str] = []
    new_on: Counter[int] = Counter()

    async def keep_opening(client: TrioClient) -> None:
        while True:
            try:
                new_on[_pid_of(await _one_session(client))] += 1
            except ServerError as error:
                failures.append(str(error))
            await trio.sleep(0.02)

    with trio.fail_after(90):
        async with (
            open_trio_client(cluster.address, token=TOKEN) as client,
            _live_sessions(client, 9) as (lives, _),
            trio.open_nursery() as nursery,
        ):
            assert {_pid_of(live.server) for live in lives} == set(cluster.pids)
            victim.send_signal(signal.SIGTERM)
            # New sessions all the while: none may fail, since the drain's delay
            # keeps the victim serving until HAProxy has seen it NOT_SERVING.
            nursery.start_soon(keep_opening, client)
            await cluster.wait_states({"replica1": "DOWN"})
            out_of_rotation = new_on[victim.pid]
            assert await victim.wait() == 0
            await trio.sleep(1.0)  # and a while after it is gone
            nursery.cancel_scope.cancel()
    assert failures == []
    assert sum(new_on[pid] for pid in cluster.pids[1:]) > 0
    assert new_on[victim.pid] == out_of_rotation  # none once HAProxy took it out
    mine = [live for live in lives if _pid_of(live.server) == victim.pid]
    others = [live for live in lives if _pid_of(live.server) != victim.pid]
    assert [live.closed for live in mine] == ["Server is shutting down"] * len(mine)
    # The others were untouched: their second chunk was answered, then they closed.
    assert [(live.results, live.error) for live in others] == [(2, None)] * len(others)


async def test_sigkill_of_one_replica_fails_only_its_streams(cluster: Cluster) -> None:
    victim = cluster.replicas[0][0]
    with trio.fail_after(90):
        async with open_trio_client(cluster.address, token=TOKEN) as client:
            # A session with a worker process on the victim: it must not outlive it.
            workers: list[int] = []
            while not workers:
                async with client.stream(IN_A_WORKER) as stream:
                    if _pid_of(stream.handle.server) == victim.pid:
                        workers = children_of(victim.pid)
                    await stream.close()
            assert list(SHM_DIR.glob(f"{PREFIX}{victim.pid}_*"))
            async with _live_sessions(client, 9) as (lives, _):
                victim.kill()
                await victim.wait()
                # New sessions succeed on the others within a few seconds.
                with trio.fail_after(5):
                    served = [_pid_of(await _one_session(client)) for _ in range(10)]
            assert victim.pid not in served
    mine = [live for live in lives if _pid_of(live.server) == victim.pid]
    others = [live for live in lives if _pid_of(live.server) != victim.pid]
    assert mine
    assert all(live.error is not None and live.closed is None for live in mine)
    assert [(live.results, live.error) for live in others] == [(2, None)] * len(others)
    # Nothing is left of it: its worker died with it, and the replica that takes its
    # place (as Kubernetes would start one) removes its shared memory at start.
    with trio.fail_after(10):
        while any(Path(f"/proc/{pid}").exists() for pid in workers):  # noqa: ASYNC110, ASYNC240
            await trio.sleep(0.05)  # another's child: its exit has nothing to wait on
        await cluster.restart(0)
    assert list(SHM_DIR.glob(f"{PREFIX}{victim.pid}_*")) == []
    with trio.fail_after(30):
        await cluster.wait_states({"replica1": "UP"})


async def test_unary_calls_and_auth_pass_through_the_balancer(cluster: Cluster) -> None:
    calc = {"version": "v1", "nodes": [{"id": "calc", "node_type": "CalculatorNode"}]}
    with trio.fail_after(30):
        async with open_trio_client(cluster.address, token=TOKEN) as client:
            version = await client.version("v1")
            assert version.compatible
            outputs = await client.execute(
                calc, {"calc": Json({"operation": "add", "operands": [2, 3]})}
            )
            assert outputs["calc"].value["result"] == 5
        async with open_trio_client(cluster.address, token="wrong") as client:
            with pytest.raises(ServerError, match=r"UNAUTHENTICATED|token"):
                await client.version("v1")


async def test_a_reconnecting_stream_moves_off_a_draining_replica_losing_nothing(
    cluster: Cluster,
) -> None:
    victim = cluster.replicas[0][0]
    count = 600  # 6 s of chunks: the drain (3 s after the signal at 2 s) meets them
    sequences: list[int] = []
    with trio.fail_after(90):
        async with open_trio_client(cluster.address, token=TOKEN) as client:
            while True:  # a session on the victim (round robin: within three tries)
                async with client.stream("passthrough", reconnect=True) as stream:
                    if _pid_of(stream.handle.server) != victim.pid:
                        await stream.close()
                        async for _ in stream:
                            pass
                        continue
                    async with trio.open_nursery() as nursery:

                        async def feed() -> None:
                            for index in range(count):
                                await stream.send(Text(f"{index}"))
                                if index == 200:
                                    victim.send_signal(signal.SIGTERM)
                                await trio.sleep(0.01)
                            await stream.close()

                        nursery.start_soon(feed)
                        async for result in stream:
                            assert result.data == Text(f"{result.sequence}")
                            sequences.append(result.sequence)
                    handle = stream.handle
                    break
    # Every chunk answered exactly once, by one session or the other.
    assert sorted(sequences) == list(range(count))
    assert handle.reconnects == 1
    assert _pid_of(handle.server) != victim.pid
    assert await victim.wait() == 0
