"""The native transport's connection, driven by h2 frames without a socket."""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection

from remotemedia.config import Limits
from remotemedia.transport.h2_connection import Connection


async def _never(stream: Any) -> None:  # no call runs in these tests
    raise AssertionError("no call should start")


async def test_crediting_a_stream_h2_has_forgotten_is_harmless() -> None:
    # A call that ends after its stream closed, and after a newer stream made h2
    # forget the closed one, credits what it did not read: h2 raised KeyError for
    # that, which took a whole replica down behind a load balancer.
    connection = Connection(None, Limits(), _never, refuse=False)  # type: ignore[arg-type]
    server = connection.h2
    server.initiate_connection()
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    request = [(":method", "POST"), (":scheme", "http"), (":path", "/x"), (":authority", "a")]
    client.send_headers(1, request, end_stream=True)
    server.receive_data(client.data_to_send())
    server.send_headers(1, [(":status", "200")], end_stream=True)  # stream 1 is closed
    client.send_headers(3, request)
    server.receive_data(client.data_to_send())  # a new stream: h2 forgets stream 1
    assert 1 not in server.streams
    connection._credit_stream(1, 1000)  # must not raise
