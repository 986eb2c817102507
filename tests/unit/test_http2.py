"""The sans-IO HTTP/2 rules: frames cut a few at a time, streams over the limit refused."""

from __future__ import annotations

import math
import random

import h2.config
import h2.connection
import h2.events
import pytest
from h2.errors import ErrorCodes

from remotemedia.transport.http2 import (
    DATA_SHARE,
    FRAMES_PER_FEED,
    FrameCutter,
    ServerH2Connection,
    h2_config,
    opened_and_reset,
)

HEADERS = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/remotemedia.v1.PipelineExecutionService/GetVersion"),
    (":authority", "localhost"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


def _client() -> h2.connection.H2Connection:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    return client


def _traffic(pairs: int, data: int = 0) -> bytes:
    """A preface, then ``pairs`` requests each reset at once, then one with ``data`` bytes."""
    client = _client()
    for _ in range(pairs):
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, HEADERS)
        client.reset_stream(stream_id)
    stream_id = client.get_next_available_stream_id()
    client.send_headers(stream_id, HEADERS, end_stream=not data)
    for start in range(0, data, 16_384):
        end = min(data, start + 16_384)
        client.send_data(stream_id, bytes(end - start), end_stream=end == data)
    return client.data_to_send()


@pytest.mark.parametrize("seed", range(5))
def test_frame_cutter_pieces_rejoin_to_what_came_whatever_the_reads(seed: int) -> None:
    data = _traffic(300, data=60_000)
    chance = random.Random(seed)
    cutter = FrameCutter(8)
    pieces: list[bytes] = []
    position = 0
    while position < len(data):
        size = chance.randint(1, 3000)
        pieces += cutter.cut(data[position : position + size])
        position += size
    assert b"".join(pieces) == data


def test_frame_cutter_ends_pieces_after_so_many_frames() -> None:
    data = _traffic(100)  # preface + SETTINGS + 200 frames + HEADERS
    pieces = FrameCutter(10).cut(data)
    assert len(pieces) == -(-203 // 10)
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    for piece in pieces[:-1]:
        # Every piece but the last ends at a frame boundary: h2 keeps nothing back.
        server.receive_data(piece)
        assert not server.incoming_buffer._data


def test_frame_cutter_passes_a_small_read_as_it_is() -> None:
    data = _traffic(3)
    (piece,) = FrameCutter(FRAMES_PER_FEED).cut(data)
    assert piece is data  # no copy on the common path


def test_a_stream_over_the_limit_is_reset_and_the_connection_goes_on() -> None:
    server = ServerH2Connection(h2_config())
    server.local_settings = h2.settings.Settings(
        client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 2}
    )
    server.initiate_connection()
    client = _client()
    for _ in range(3):
        client.send_headers(client.get_next_available_stream_id(), HEADERS)
    events = server.receive_data(client.data_to_send())
    opened = [e.stream_id for e in events if isinstance(e, h2.events.RequestReceived)]
    assert opened == [1, 3]
    replies = client.receive_data(server.data_to_send())
    (reset,) = [e for e in replies if isinstance(e, h2.events.StreamReset)]
    assert (reset.stream_id, reset.error_code) == (5, ErrorCodes.REFUSED_STREAM)
    # Its header block was decoded (HPACK stays in step): the next request parses.
    client.reset_stream(1)
    client.send_headers(client.get_next_available_stream_id(), HEADERS, end_stream=True)
    events = server.receive_data(client.data_to_send())
    (request,) = [e for e in events if isinstance(e, h2.events.RequestReceived)]
    assert dict(request.headers)[b":path"] == HEADERS[2][1].encode()


def test_opened_and_reset_names_streams_reset_in_the_read_that_opened_them() -> None:
    server = ServerH2Connection(h2_config())
    server.initiate_connection()
    client = _client()
    kept = client.get_next_available_stream_id()
    client.send_headers(kept, HEADERS)
    server.receive_data(client.data_to_send())
    gone = client.get_next_available_stream_id()
    client.send_headers(gone, HEADERS)
    client.reset_stream(gone)
    client.reset_stream(kept)  # reset now, but opened in an earlier read
    assert opened_and_reset(server.receive_data(client.data_to_send())) == {gone}


def test_frame_cutter_counts_data_frames_as_a_share_of_a_frame() -> None:
    client = _client()
    stream_id = client.get_next_available_stream_id()
    client.send_headers(stream_id, HEADERS)
    for _ in range(400):  # audio chunks are many small DATA frames: cheap to parse
        client.send_data(stream_id, bytes(10))
    data = client.data_to_send()
    # preface + SETTINGS + HEADERS, then 400 DATA frames worth 400 / DATA_SHARE frames
    frames = 3 + 400 / DATA_SHARE
    assert len(FrameCutter(10).cut(data)) == math.ceil(frames / 10)
