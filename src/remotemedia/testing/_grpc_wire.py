"""The gRPC transport of the fault kit: the real server, and a grpclib client call.

Kept apart from :mod:`remotemedia.testing.faults` so that in-process scenarios never
import grpclib or trio-asyncio.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio_asyncio
from grpclib.client import Channel
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from h2.exceptions import H2Error

from remotemedia.config import ServerConfig
from remotemedia.nodes import NodeRegistry
from remotemedia.service.seams import Seams
from remotemedia.testing.trace import CallEnded
from remotemedia.transport import serving as transport
from remotemedia.transport.grpclib_internals import client_ended, raise_client_status
from remotemedia.transport.serving import ServerAddress
from remotemedia.v1 import streaming_grpc
from remotemedia.v1 import streaming_pb2 as spb

__all__ = ["grpc_wire", "serving"]

STOP_TIMEOUT = 15.0
"""Seconds the server may take to stop once the scenario is over."""


@asynccontextmanager
async def serving(
    config: ServerConfig, registry: NodeRegistry | None, seams: Seams
) -> AsyncIterator[ServerAddress]:
    """Run the real server; SIGTERM to this process drains it, as ``remotemedia serve`` does."""
    shutdown = trio.Event()
    stopped = trio.Event()

    async def serve(task_status: trio.TaskStatus[ServerAddress]) -> None:
        try:
            await transport.serve(
                config, shutdown, registry=registry, seams=seams, task_status=task_status
            )
        finally:
            stopped.set()

    async def on_sigterm() -> None:
        with trio.open_signal_receiver(signal.SIGTERM) as signals:
            async for _ in signals:
                shutdown.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(on_sigterm)
        address: ServerAddress = await nursery.start(serve)
        try:
            yield address
        finally:
            shutdown.set()  # drain, as on SIGTERM
            with trio.move_on_after(STOP_TIMEOUT):
                await stopped.wait()
            nursery.cancel_scope.cancel()


class _GrpcWire:
    """One StreamPipeline call from a grpclib client."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    async def send(self, request: spb.StreamRequest) -> None:
        try:
            await trio_asyncio.aio_as_trio(self.stream.send_message)(request)
        except (StreamTerminatedError, ProtocolError, GRPCError, ConnectionError):
            await trio.sleep_forever()  # the call is over; the reader sees how

    async def recv(self) -> spb.StreamResponse | None:
        try:
            response: spb.StreamResponse | None = await trio_asyncio.aio_as_trio(
                self.stream.recv_message
            )()
        except GRPCError as error:
            raise CallEnded(f"status:{error.status.name}", error.message or "") from None
        except StreamTerminatedError as error:
            try:
                raise_client_status(self.stream)  # the server's status, if sent before the reset
            except GRPCError as status:
                raise CallEnded(f"status:{status.status.name}", status.message or "") from None
            raise CallEnded("reset", str(error)) from None
        except (ProtocolError, ConnectionError) as error:
            raise CallEnded("reset", str(error)) from None
        return response


_FINISH_TIMEOUT = 5.0
"""Seconds the client waits for the server's trailers once its conversation is over."""


async def _finish(stream: Any) -> None:
    """End the client's side and read the trailers, however the call went."""
    # Its outcome is in the trace already (closed, an error, a status or a reset):
    # what grpclib says about the call's end here only repeats it.
    with contextlib.suppress(GRPCError, ProtocolError, StreamTerminatedError, H2Error, OSError):
        if not client_ended(stream):
            await stream.end()
        await stream.recv_trailing_metadata()
    with contextlib.suppress(GRPCError, ProtocolError, StreamTerminatedError, H2Error, OSError):
        await stream.__aexit__(None, None, None)


@asynccontextmanager
async def grpc_wire(address: ServerAddress) -> AsyncIterator[_GrpcWire]:
    """A channel to the server and one StreamPipeline call on it."""

    async def create() -> Channel:
        return Channel(address.host, address.port)

    async with trio_asyncio.open_loop():
        channel = await trio_asyncio.aio_as_trio(create)()
        try:
            stub = streaming_grpc.StreamingPipelineServiceStub(channel)
            stream = stub.StreamPipeline.open()
            await trio_asyncio.aio_as_trio(stream.__aenter__)()
            try:
                await trio_asyncio.aio_as_trio(stream.send_request)()
                yield _GrpcWire(stream)
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(_FINISH_TIMEOUT):
                    await trio_asyncio.aio_as_trio(_finish)(stream)
        finally:
            channel.close()
