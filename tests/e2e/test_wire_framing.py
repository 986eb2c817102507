"""Malformed gRPC message framing gets INVALID_ARGUMENT, not an internal error."""

from __future__ import annotations

import logging
import struct

import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from remotemedia.transport.serving import ServerAddress
from tests.e2e.conftest import TIMEOUT, aio, assert_serves, raw_stream


async def _send_raw(server: ServerAddress, data: bytes) -> GRPCError:
    """Send ``data`` as the whole request body, end the stream, return the call's error."""
    async with raw_stream(server) as stream:
        await aio(stream.stream._stream.send_data)(data, end_stream=True)
        stream.ended = True
        with pytest.raises(GRPCError) as caught:
            await stream.recv()
        return caught.value


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (struct.pack(">?I", False, 100) + b"short", "The stream ended inside a message"),
        (b"\x00\x00\x00", "The stream ended inside a message header"),
    ],
    ids=["length-prefix-beyond-the-data", "truncated-header"],
)
async def test_framing_truncated_message_is_invalid_argument(
    server: ServerAddress, caplog: pytest.LogCaptureFixture, body: bytes, expected: str
) -> None:
    with trio.fail_after(TIMEOUT), caplog.at_level(logging.ERROR):
        error = await _send_raw(server, body)
        assert error.status is Status.INVALID_ARGUMENT, error
        assert error.message is not None
        assert expected in error.message
        await assert_serves(server)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
