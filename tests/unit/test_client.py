"""The client's reading of a stream's responses, against a scripted stream (no network)."""

from __future__ import annotations

import pytest

from remotemedia import NodeError, ServerError, Text
from remotemedia.client import client as client_module
from remotemedia.client.client import StreamHandle
from remotemedia.service.convert import data_to_wire
from remotemedia.service.status import error_response, lost_input_response
from remotemedia.session import Result
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import streaming_pb2 as spb


class ScriptedStream:
    """Plays back StreamResponses as a grpclib stream would, then ends."""

    def __init__(self, *responses: spb.StreamResponse) -> None:
        self._responses = list(responses)

    async def recv_message(self) -> spb.StreamResponse | None:
        return self._responses.pop(0) if self._responses else None


def result_response(node_id: str, sequence: int, text: str) -> spb.StreamResponse:
    chunk = spb.ChunkResult(sequence=sequence, data_outputs={node_id: data_to_wire(Text(text))})
    return spb.StreamResponse(result=chunk)


async def test_stream_handle_reports_a_lost_input_and_goes_on() -> None:
    lost = NodeError("whisper", "WhisperNode", "its worker was killed", sequence=12)
    handle = StreamHandle(
        ScriptedStream(
            result_response("whisper", 11, "before"),
            spb.StreamResponse(error=lost_input_response(lost, 12)),
            result_response("whisper", 13, "after"),
            spb.StreamResponse(closed=spb.StreamClosed(reason="done")),
        ),
        "test:1",
    )
    results = [r async for r in handle]
    assert [(r.node_id, r.sequence, r.data) for r in results] == [
        ("whisper", 11, Text("before")),
        ("whisper", 12, None),
        ("whisper", 13, Text("after")),
    ]
    failure = results[1].error
    assert isinstance(failure, NodeError)
    # The same Result as when the client matched the English sentence.
    assert results[1] == Result("whisper", 12, None, failure)
    assert (failure.node_id, failure.node_type, failure.reason) == ("whisper", "", str(lost))
    assert handle.closed is not None


async def test_stream_handle_raises_a_fatal_node_error() -> None:
    fatal = NodeError("calc", "CalculatorNode", "division by zero", sequence=3)
    response = spb.StreamResponse(error=error_response(fatal))
    handle = StreamHandle(ScriptedStream(response), "test:1")
    with pytest.raises(ServerError, match="division by zero") as caught:
        await handle.__anext__()
    assert caught.value.error_type == "NODE_EXECUTION"
    assert caught.value.failing_node_id == "calc"


async def test_stream_handle_does_not_take_the_sentence_alone_for_a_lost_input() -> None:
    # Only the marker says "lost input": a context that merely reads like one is fatal.
    response = pb.ErrorResponse(
        error_type=pb.ERROR_TYPE_NODE_EXECUTION,
        message="Node 'n' (T) failed.",
        failing_node_id="n",
        context="input sequence 4 was lost; the session continues",
    )
    handle = StreamHandle(ScriptedStream(spb.StreamResponse(error=response)), "test:1")
    with pytest.raises(ServerError):
        await handle.__anext__()


def test_a_reconnecting_stream_resends_exactly_what_the_old_session_did_not_take() -> None:
    sent = client_module._Sent()
    requests = [_chunk(n) for n in range(5)]
    for request in requests:
        sent.add(request)
    assert sent.any_untaken(3)
    assert not sent.any_untaken(5)
    assert sent.untaken(3) == requests[3:]
    assert sent.untaken(0) == []  # a new record starts after each move


def test_a_reconnecting_stream_that_forgot_untaken_chunks_says_so() -> None:
    sent = client_module._Sent()
    for n in range(client_module.RESEND_CHUNKS + 10):
        sent.add(_chunk(n))
    tail = sent.untaken(10)  # the 10 forgotten ones were taken: fine
    assert [r.data_chunk.sequence for r in tail][:1] == [10]
    for n in range(client_module.RESEND_CHUNKS + 10):
        sent.add(_chunk(n))
    with pytest.raises(ServerError, match="no longer held"):
        sent.untaken(3)


def _chunk(sequence: int) -> spb.StreamRequest:
    return spb.StreamRequest(data_chunk=spb.DataChunk(sequence=sequence))
