"""Shutdown drains: live sessions finish their in-flight work, say `closed`, end with OK.

The server runs in the test's Trio run, so a test node can tell the test exactly
when it is working on an input.
"""

from __future__ import annotations

from typing import Any

import attrs
import trio
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from remotemedia import Node, Text, param
from remotemedia.nodes import NodeRegistry, builtin_registry
from tests.e2e.conftest import (
    PASS,
    TIMEOUT,
    RawStream,
    ServerFactory,
    aio,
    chunk,
    init,
    kind,
    manifest,
    open_channel,
    open_raw_stream,
    text_buffer,
)


@attrs.frozen
class HoldParams:
    seconds: float = param(0.5, doc="how long each input takes", ge=0)


class Hold(Node[HoldParams]):
    """Echo each text after ``seconds``; tells the test when it starts on one."""

    node_type = "Hold"
    Params = HoldParams
    working = trio.Event()

    async def process(self, data: Any) -> Any:
        Hold.working.set()
        await trio.sleep(self.params.seconds)
        return Text(f"held {data.text}")


def _registry() -> NodeRegistry:
    Hold.working = trio.Event()
    registry = builtin_registry()
    registry.register(Hold)
    return registry


async def _until_ended(
    stream: RawStream, sender: trio.CancelScope | None = None
) -> tuple[list[str], str]:
    """Every response kind until the call ends, and how it ended (a status name).

    ``sender``, if given, is cancelled once the responses end, before our side ends.
    """
    kinds = []
    try:
        while (response := await stream.recv()) is not None:
            kinds.append(kind(response))
            if kind(response) == "closed":
                assert response.closed.reason == "Server is shutting down"
        if sender is not None:
            sender.cancel()
        await stream.finish()
    except Exception as error:  # the test reports how the call ended
        return kinds, type(error).__name__
    return kinds, "OK"


async def test_drain_lets_in_flight_work_finish_before_closed(
    start_server: ServerFactory,
) -> None:
    shutdown = trio.Event()
    server = await start_server(shutdown=shutdown, registry=_registry(), drain_timeout=5.0)
    with trio.fail_after(TIMEOUT):
        async with open_channel(server) as channel, open_raw_stream(channel) as stream:
            await stream.open_session(init(manifest([("hold", "Hold", {"seconds": 0.5})])))
            await stream.send(chunk(text_buffer("x"), 0, node_id="hold"))
            await Hold.working.wait()
            shutdown.set()
            kinds, ending = await _until_ended(stream)
    assert kinds == ["result", "closed"]
    assert ending == "OK"


async def test_drain_timeout_holds_against_work_that_never_ends(
    start_server: ServerFactory,
) -> None:
    shutdown = trio.Event()
    server = await start_server(shutdown=shutdown, registry=_registry(), drain_timeout=0.5)
    with trio.fail_after(TIMEOUT):
        async with open_channel(server) as channel, open_raw_stream(channel) as stream:
            await stream.open_session(init(manifest([("hold", "Hold", {"seconds": 3600})])))
            await stream.send(chunk(text_buffer("x"), 0, node_id="hold"))
            await Hold.working.wait()
            shutdown.set()
            kinds, ending = await _until_ended(stream)
    assert kinds == ["closed"]  # cancelled at the drain timeout, and told so
    assert ending == "OK"


async def test_drain_ends_every_busy_stream_with_closed_and_ok(
    start_server: ServerFactory,
) -> None:
    """Ten streams still sending at the signal each get `closed` and then status OK."""
    shutdown = trio.Event()
    server = await start_server(shutdown=shutdown, drain_timeout=5.0)
    endings: list[tuple[list[str], str]] = []
    with trio.fail_after(TIMEOUT):
        async with open_channel(server) as channel, trio.open_nursery() as nursery:
            sending = trio.Semaphore(0)

            async def busy() -> None:
                async with open_raw_stream(channel) as stream:
                    await stream.open_session(init(PASS))
                    sender = trio.CancelScope()

                    async def send_forever() -> None:
                        with sender:
                            sequence = 0
                            while True:
                                await stream.send(chunk(text_buffer("x"), sequence))
                                if sequence == 0:
                                    sending.release()
                                sequence += 1

                    async with trio.open_nursery() as inner:
                        inner.start_soon(send_forever)
                        kinds, ending = await _until_ended(stream, sender)
                        endings.append(
                            ([k for k in kinds if k not in ("result", "metrics")], ending)
                        )

            for _ in range(10):
                nursery.start_soon(busy)
            for _ in range(10):
                await sending.acquire()
            shutdown.set()
    assert endings == [(["closed"], "OK")] * 10


async def test_drain_delay_says_not_serving_and_still_serves_new_sessions(
    start_server: ServerFactory,
) -> None:
    # What a load balancer needs: out of rotation at once (health), yet no session
    # refused before it has noticed; then the drain as usual.
    shutdown = trio.Event()
    server = await start_server(shutdown=shutdown, drain_delay=1.0, drain_timeout=5.0)
    with trio.fail_after(TIMEOUT):
        async with open_channel(server) as channel:
            health = HealthStub(channel)
            request = HealthCheckRequest(service="remotemedia.v1.StreamingPipelineService")
            assert (await aio(health.Check)(request)).status == HealthCheckResponse.SERVING
            async with open_raw_stream(channel) as live:
                await live.open_session(init(PASS))
                shutdown.set()
                await trio.sleep(0.1)  # the signal is handled (a real clock: a socket)
                assert (await aio(health.Check)(request)).status == (
                    HealthCheckResponse.NOT_SERVING
                )
                async with open_raw_stream(channel) as late:
                    await late.open_session(init(PASS))  # taken: still in the delay
                    await late.send(chunk(text_buffer("late"), 0))
                    kinds, ending = await _until_ended(late)
                assert (kinds[0], kinds[-1], ending) == ("result", "closed", "OK")
                kinds, ending = await _until_ended(live)
                assert (kinds, ending) == (["closed"], "OK")
