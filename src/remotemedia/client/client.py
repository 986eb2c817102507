"""The client: connect, stream a pipeline, execute once, ask the version."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio_asyncio
from grpclib.client import Channel
from grpclib.exceptions import GRPCError, StreamTerminatedError
from h2.exceptions import StreamClosedError

from remotemedia.errors import ManifestError, NodeError, Problem, ServerError
from remotemedia.examples import example_path
from remotemedia.manifest import Manifest, load_manifest, manifest_from_dict
from remotemedia.media import RuntimeData
from remotemedia.service.convert import data_from_wire, data_to_wire, manifest_to_wire
from remotemedia.service.identity import SERVER_HEADER
from remotemedia.service.status import SHUTTING_DOWN, lost_input_sequence
from remotemedia.session import Result
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import execution_grpc, streaming_grpc
from remotemedia.v1 import execution_pb2 as epb
from remotemedia.v1 import streaming_pb2 as spb

__all__ = ["Client", "ServerError", "StreamHandle", "open_trio_client"]

CLIENT_VERSION = "v1"
MAX_MESSAGE_BYTES = 10 * 1024 * 1024
T = TypeVar("T")


def load_client_manifest(source: str | os.PathLike[str] | Mapping[str, Any] | Manifest) -> Manifest:
    """Load a manifest for sending: a file, a bundled example's name, a dict or a Manifest.

    Node types are not checked here: the server knows which ones it has.
    """
    if isinstance(source, Manifest):
        return source
    if isinstance(source, Mapping):
        return manifest_from_dict(source)
    path = Path(os.fspath(source))
    if not path.exists() and isinstance(source, str):
        bundled = example_path(source)
        if bundled is None:
            raise ManifestError([Problem("$", f"no file or bundled example named '{source}'.")])
        path = bundled
    return load_manifest(path)


def _server_error(error: pb.ErrorResponse) -> ServerError:
    return ServerError(
        error.message or "The server reported an error without a message.",
        error_type=pb.ErrorType.Name(error.error_type).removeprefix("ERROR_TYPE_"),
        failing_node_id=error.failing_node_id,
    )


@contextmanager
def _translated(address: str) -> Iterator[None]:
    """Report transport failures as ServerError, with the address."""
    try:
        yield
    except GRPCError as error:
        raise _status_error(error) from None
    except StreamTerminatedError as error:
        raise ServerError(
            f"The connection to {address} was lost: {error}", error_type="UNAVAILABLE"
        ) from None
    except OSError as error:
        raise ServerError(
            f"Cannot reach the server at {address}: {error.strerror or error}.",
            error_type="UNAVAILABLE",
        ) from None


def _status_error(error: GRPCError) -> ServerError:
    return ServerError(
        f"The server refused the call: {error.status.name}: {error.message}",
        error_type=error.status.name,
    )


RESEND_CHUNKS = 4096
"""Chunks a reconnecting stream keeps to send again (82 s of 20 ms chunks)."""


class _Sent:
    """The requests sent to the current session, in order, to send again after a move.

    A drained session's ``closed`` says how many chunks it took
    (``final_metrics.data_type_breakdown`` counts them by kind): those are done, the
    rest go to the next session.
    """

    def __init__(self) -> None:
        self._requests: collections.deque[spb.StreamRequest] = collections.deque()
        self._dropped = 0  # the oldest ones, forgotten to bound memory

    def add(self, request: spb.StreamRequest) -> None:
        self._requests.append(request)
        if len(self._requests) > RESEND_CHUNKS:
            self._requests.popleft()
            self._dropped += 1

    def any_untaken(self, taken: int) -> bool:
        """Whether requests beyond the first ``taken`` were sent."""
        return taken < self._dropped + len(self._requests)

    def untaken(self, taken: int) -> list[spb.StreamRequest]:
        """Every request after the first ``taken``; starts a new record.

        Raises:
            ServerError: Some untaken requests were already forgotten.
        """
        if taken < self._dropped:
            raise ServerError(
                f"The server took {taken} chunks before it shut down, and the older of the "
                f"rest are no longer held (a reconnecting stream keeps {RESEND_CHUNKS}); the "
                "session cannot go on elsewhere without losing them.",
                error_type="UNAVAILABLE",
            )
        requests = list(self._requests)[taken - self._dropped :]
        self._requests.clear()
        self._dropped = 0
        return requests


def _taken(closed: spb.StreamClosed) -> int:
    """How many chunks a session took, from its ``closed`` (counted by kind)."""
    return sum(closed.final_metrics.data_type_breakdown.values())


class StreamHandle:
    """One StreamPipeline session, open and ready.

    Send with :meth:`send`; read results with ``async for`` (``_status`` results are
    skipped, ``metrics`` are kept in :attr:`metrics`); :meth:`close` flushes and ends
    the session, after which iteration ends at the server's ``closed``.

    Attributes:
        session_id: The server's id for this session.
        statuses: The ``_status`` progress lines received before ``ready``.
        metrics: The latest StreamMetrics.
        closed: The StreamClosed message, once received.
        server: The server process that serves the session (its ``remotemedia-server``
            header, ``<host>/<pid>``); empty if the server does not say.
        reconnects: Times the session moved to a new one after a drain (with
            ``reconnect=True``).

    With ``reopen`` (``Client.stream(..., reconnect=True)``), a session that a
    draining server closes goes on in a new session: the reader opens it (through
    the same address, which behind a balancer is another replica), sends again the
    chunks the old one had not taken, and iteration goes on with its results. A
    ``send`` that meets the closed session waits for the move. Node state (a partial
    utterance) does not move.
    """

    def __init__(
        self,
        stream: Any,
        address: str,
        *,
        init: spb.StreamInit | None = None,
        reopen: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        self._stream = stream
        self._address = address
        self._init = init
        self._reopen = reopen
        self._sent = _Sent()
        self._end_request: spb.StreamRequest | None = None  # our close/cancel, if sent
        self._generation = 0  # sessions moved to so far
        self._settled = asyncio.Event()  # the reader has dealt with the session's end
        self._moved = asyncio.Event()  # clear while a move is in progress
        self._moved.set()
        self.reconnects = 0
        self._sequence = 0
        self.session_id = ""
        self.server = ""
        self.recommended_chunk_size = 0
        self.statuses: list[str] = []
        self.metrics: spb.StreamMetrics | None = None
        self.closed: spb.StreamClosed | None = None
        self._ended = False  # the server's side is over
        self._sent_end = False  # our side is over

    async def _open(self, init: spb.StreamInit) -> None:
        await self._stream.send_message(spb.StreamRequest(init=init))
        while True:
            response = await self._receive()
            if response is None:
                raise ServerError(
                    "The server ended the stream before it was ready.", error_type="UNAVAILABLE"
                )
            kind = response.WhichOneof("response")
            if kind == "ready":
                self.session_id = response.ready.session_id
                self.server = str((self._stream.initial_metadata or {}).get(SERVER_HEADER, ""))
                self.recommended_chunk_size = response.ready.recommended_chunk_size
                return
            if kind == "closed":
                self.closed, self._ended = response.closed, True
                raise ServerError(
                    f"The server closed the session before it was ready: {response.closed.reason}.",
                    error_type="UNAVAILABLE",
                )
            if kind == "result" and "_status" in response.result.data_outputs:
                self.statuses.append(
                    response.result.data_outputs["_status"].text.text_data.decode()
                )

    async def _receive(self) -> spb.StreamResponse | None:
        with _translated(self._address):
            response: spb.StreamResponse | None = await self._stream.recv_message()
        if (
            response is not None
            and response.WhichOneof("response") == "error"
            and lost_input_sequence(response.error) is None
        ):
            raise _server_error(response.error)
        return response

    async def send(
        self, data: RuntimeData, *, node_id: str = "", sequence: int | None = None
    ) -> int:
        """Send one chunk (to ``node_id``, or the source nodes); returns its sequence."""
        if sequence is None:
            sequence = self._sequence
        self._sequence = sequence + 1
        chunk = spb.DataChunk(node_id=node_id, buffer=data_to_wire(data), sequence=sequence)
        request = spb.StreamRequest(data_chunk=chunk)
        if self._reopen is None:
            await self._send(request)
            return sequence
        await self._moved.wait()  # a move in progress sends the untaken chunks first
        # No await between here and the send's start: a move records none of ours late.
        generation, settled, stream = self._generation, self._settled, self._stream
        self._sent.add(request)
        try:
            await self._send(request, stream=stream)
        except (ServerError, StreamClosedError):
            await settled.wait()  # the reader moves the session, or ends it
            if self._generation == generation:
                raise  # not moved: the session is over
            # Moved: the new session got this chunk with the other untaken ones.
        return sequence

    async def _send(
        self, request: spb.StreamRequest, *, end: bool = False, stream: Any = None
    ) -> None:
        current = stream is None or stream is self._stream  # (an old session's: no checks)
        if current and (self._ended or self._sent_end):
            reason = f": {self.closed.reason}" if self.closed else ""
            raise ServerError(f"The session is already closed{reason}.", error_type="CLOSED")
        try:
            await (stream or self._stream).send_message(request, end=end)
        except StreamTerminatedError as error:
            raise ServerError(
                f"The server ended the session while sending: {error}", error_type="UNAVAILABLE"
            ) from None
        self._sent_end = end

    async def close(self) -> None:
        """Ask the server to flush in-flight work and close (results keep coming until then)."""
        control = spb.StreamControl(command=spb.StreamControl.COMMAND_CLOSE)
        self._end_request = spb.StreamRequest(control=control)
        await self._send(self._end_request, end=True)

    async def cancel(self) -> None:
        """Ask the server to stop at once."""
        control = spb.StreamControl(command=spb.StreamControl.COMMAND_CANCEL)
        self._end_request = spb.StreamRequest(control=control)
        await self._send(self._end_request, end=True)

    def __aiter__(self) -> StreamHandle:
        return self

    async def __anext__(self) -> Result:
        try:
            return await self._next()
        except BaseException:
            self._settled.set()  # the session is over: senders waiting on it go on
            raise

    async def _next(self) -> Result:
        while not self._ended:
            response = await self._receive()
            if response is None:
                break
            kind = response.WhichOneof("response")
            if kind == "closed":
                self.closed = response.closed
                if self._moves(response.closed):
                    await self._move(response.closed)
                    continue
                break
            if kind == "error":  # a lost input (_receive raised any other error)
                error = response.error
                sequence = lost_input_sequence(error)
                assert sequence is not None
                failure = NodeError(error.failing_node_id, "", error.message)
                return Result(error.failing_node_id, sequence, None, failure)
            if kind == "metrics":
                self.metrics = response.metrics
            elif kind == "result":
                outputs = response.result.data_outputs
                if "_status" in outputs:
                    continue
                node_id, buffer = next(iter(outputs.items()))
                return Result(node_id, response.result.sequence, data_from_wire(buffer, node_id))
        self._ended = True
        raise StopAsyncIteration

    def _moves(self, closed: spb.StreamClosed) -> bool:
        """Whether this ``closed`` starts a move to a new session."""
        if self._reopen is None or closed.reason != SHUTTING_DOWN:
            return False
        if self._end_request is None:
            return True  # we meant to go on
        if self._end_request.control.command == spb.StreamControl.COMMAND_CANCEL:
            return False
        # Closed by us too: only chunks the old session never took are left to do.
        return self._sent.any_untaken(_taken(closed))

    async def _move(self, closed: spb.StreamClosed) -> None:
        """Go on in a new session: open it, send what the old one had not taken."""
        assert self._reopen is not None
        assert self._init is not None
        settled = self._settled
        self._settled = asyncio.Event()  # for the new session
        self._moved.clear()
        try:
            untaken = self._sent.untaken(_taken(closed))
            with contextlib.suppress(StreamClosedError, StreamTerminatedError):
                await self._stream.cancel()  # our side of the old call
            self._stream = await self._reopen()
            self._ended = self._sent_end = False
            self.closed = None
            await self._open(self._init)
            self._generation += 1
            self.reconnects += 1
            for request in untaken:
                self._sent.add(request)
                await self._send(request)
            if self._end_request is not None:
                await self._send(self._end_request, end=True)
        finally:
            self._moved.set()
            settled.set()  # senders waiting on the old session go on


class Client:
    """A connection to a remotemedia server.

    Create with :meth:`connect` (an async context manager). With ``token``, every
    call carries ``authorization: Bearer <token>``.
    """

    def __init__(self, channel: Channel, token: str | None = None, address: str = "") -> None:
        self._channel = channel
        self.address = address
        self._metadata = {"authorization": f"Bearer {token}"} if token else None
        self._streaming = streaming_grpc.StreamingPipelineServiceStub(channel)
        self._execution = execution_grpc.PipelineExecutionServiceStub(channel)

    @classmethod
    @asynccontextmanager
    async def connect(cls, address: str, *, token: str | None = None) -> AsyncIterator[Client]:
        """Open a connection to ``host:port``."""
        host, _, port = address.rpartition(":")
        channel = Channel(host.strip("[]") or "127.0.0.1", int(port))
        try:
            yield cls(channel, token, address)
        finally:
            channel.close()

    @asynccontextmanager
    async def stream(
        self,
        manifest: str | os.PathLike[str] | Mapping[str, Any] | Manifest,
        *,
        expected_chunk_size: int = 0,
        client_version: str = CLIENT_VERSION,
        reconnect: bool = False,
        traceparent: str | None = None,
    ) -> AsyncIterator[StreamHandle]:
        """Open a streaming session; yields once the server sent ``ready``.

        With ``reconnect``, a session closed by a draining server goes on in a new
        one (see :class:`StreamHandle`); the results keep coming through the handle.
        With ``traceparent`` (W3C, ``00-<trace id>-<span id>-<flags>``), the call
        carries it, and a server that traces puts the session in that trace.
        """
        metadata = dict(self._metadata or {})
        if traceparent is not None:
            metadata["traceparent"] = traceparent
        init = spb.StreamInit(
            manifest=manifest_to_wire(load_client_manifest(manifest)),
            client_version=client_version,
            expected_chunk_size=expected_chunk_size,
        )
        handle: StreamHandle | None = None
        try:
            async with contextlib.AsyncExitStack() as calls:

                async def open_call() -> Any:
                    call = self._streaming.StreamPipeline.open(metadata=metadata or None)
                    stream = await calls.enter_async_context(call)
                    with _translated(self.address):
                        await stream.send_request()
                    return stream

                handle = StreamHandle(
                    await open_call(),
                    self.address,
                    init=init,
                    reopen=open_call if reconnect else None,
                )
                await handle._open(init)
                yield handle
                stream = handle._stream
                if not handle._ended:
                    # The server may have ended it meanwhile (unread results): then
                    # there is nothing left to cancel.
                    with contextlib.suppress(StreamClosedError):
                        await stream.cancel()
                elif not handle._sent_end:
                    await stream.end()  # the server closed first; end our side too
        except GRPCError as error:
            raise _status_error(error) from None
        except StreamTerminatedError as error:
            if handle is not None and handle.closed is not None:
                return  # the session had ended; a server shutting down dropped the line
            raise ServerError(
                f"The connection to {self.address} was lost: {error}", error_type="UNAVAILABLE"
            ) from None

    async def execute(
        self,
        manifest: str | os.PathLike[str] | Mapping[str, Any] | Manifest,
        inputs: Mapping[str, RuntimeData],
    ) -> dict[str, RuntimeData]:
        """Run a pipeline once; ``inputs`` and the result are keyed by node id."""
        request = epb.ExecuteRequest(
            manifest=manifest_to_wire(load_client_manifest(manifest)),
            data_inputs={node_id: data_to_wire(data) for node_id, data in inputs.items()},
            client_version=CLIENT_VERSION,
        )
        with _translated(self.address):
            response = await self._execution.ExecutePipeline(request, metadata=self._metadata)
        if response.HasField("error"):
            raise _server_error(response.error)
        return {
            node_id: data_from_wire(buffer, node_id)
            for node_id, buffer in response.result.data_outputs.items()
        }

    async def version(self, client_version: str = CLIENT_VERSION) -> epb.VersionResponse:
        """Ask the server's version, node types, and whether it speaks ``client_version``."""
        with _translated(self.address):
            return await self._execution.GetVersion(
                epb.VersionRequest(client_version=client_version), metadata=self._metadata
            )


class TrioClient:
    """The :class:`Client` API for Trio code (see :func:`open_trio_client`)."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def _call(self, function: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        return trio_asyncio.aio_as_trio(function)  # type: ignore[no-any-return]

    async def execute(
        self, manifest: Any, inputs: Mapping[str, RuntimeData]
    ) -> dict[str, RuntimeData]:
        """See :meth:`Client.execute`."""
        return await self._call(self._client.execute)(manifest, inputs)

    async def version(self, client_version: str = CLIENT_VERSION) -> epb.VersionResponse:
        """See :meth:`Client.version`."""
        return await self._call(self._client.version)(client_version)

    @asynccontextmanager
    async def stream(self, manifest: Any, **options: Any) -> AsyncIterator[TrioStream]:
        """See :meth:`Client.stream`."""
        async with trio_asyncio.aio_as_trio(self._client.stream(manifest, **options)) as handle:
            yield TrioStream(handle)


class TrioStream:
    """:class:`StreamHandle` for Trio code."""

    def __init__(self, handle: StreamHandle) -> None:
        self.handle = handle

    async def send(self, data: RuntimeData, **options: Any) -> int:
        """See :meth:`StreamHandle.send`."""
        sequence: int = await trio_asyncio.aio_as_trio(self.handle.send)(data, **options)
        return sequence

    async def close(self) -> None:
        """See :meth:`StreamHandle.close`."""
        await trio_asyncio.aio_as_trio(self.handle.close)()

    async def cancel(self) -> None:
        """See :meth:`StreamHandle.cancel`."""
        await trio_asyncio.aio_as_trio(self.handle.cancel)()

    def __aiter__(self) -> TrioStream:
        return self

    async def __anext__(self) -> Result:
        result: Result = await trio_asyncio.aio_as_trio(self.handle.__anext__)()
        return result


@asynccontextmanager
async def open_trio_client(address: str, *, token: str | None = None) -> AsyncIterator[TrioClient]:
    """Connect from Trio code (opens a trio-asyncio loop for grpclib underneath)."""
    try:
        async with (
            trio_asyncio.open_loop(),
            trio_asyncio.aio_as_trio(Client.connect(address, token=token)) as client,
        ):
            yield TrioClient(client)
    except BaseExceptionGroup as group:
        # The loop's nursery wraps errors; give Trio callers the one that matters.
        errors, _ = group.split(ServerError)
        if errors is None:
            raise
        first: BaseException = errors
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
