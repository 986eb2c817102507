"""A WebSocket client written from the README's five lines, on bare wsproto.

No WebSocket library beyond the sans-IO framing: the handshake with the
``remotemedia.v1`` subprotocol, one serialized ``StreamRequest`` per binary message
out, one ``StreamResponse`` per binary message in. What a third-party client would
write, checked against the real server over a real socket.
"""

from __future__ import annotations

import pytest
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Request,
)

from remotemedia.transport.serving import ServerAddress
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import streaming_pb2 as spb
from tests.e2e.conftest import (
    CLOSE,
    TIMEOUT,
    ServerFactory,
    chunk,
    init,
    kind,
    manifest,
    text_buffer,
)

FAN = manifest(
    [("src", "PassThrough"), ("left", "Echo"), ("right", "PassThrough")],
    [("src", "left"), ("src", "right")],
)


async def converse(
    address: ServerAddress, requests: list[spb.StreamRequest]
) -> tuple[list[spb.StreamResponse], int]:
    """Send ``requests``, read responses until the server closes; (responses, close code)."""
    assert address.web_port is not None
    ws = WSConnection(ConnectionType.CLIENT)
    async with await trio.open_tcp_stream(address.host, address.web_port) as stream:
        # 1. the handshake, with the subprotocol
        host = f"{address.host}:{address.web_port}"
        await stream.send_all(
            ws.send(Request(host=host, target="/v1/stream", subprotocols=["remotemedia.v1"]))
        )
        responses: list[spb.StreamResponse] = []
        accepted = False
        while True:
            data = await stream.receive_some(65536)
            ws.receive_data(data or None)
            event: Event
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    assert event.subprotocol == "remotemedia.v1"
                    accepted = True
                    for request in requests:  # 2. each request one binary message
                        await stream.send_all(ws.send(BytesMessage(request.SerializeToString())))
                elif isinstance(event, BytesMessage):
                    # 3. each response one binary message
                    responses.append(spb.StreamResponse.FromString(bytes(event.data)))
                elif isinstance(event, CloseConnection):
                    # 4./5. the server closes with a code once the session is over
                    await stream.send_all(ws.send(event.response()))
                    assert accepted
                    return responses, event.code
                else:
                    pytest.fail(f"unexpected {event!r}")


async def test_a_wsproto_client_gets_ready_results_by_sink_and_closed(
    start_server: ServerFactory,
) -> None:
    address = await start_server(web_port=0)
    requests = [init(FAN)]
    requests += [chunk(text_buffer(t), s, node_id="src") for s, t in enumerate("xyz")]
    requests.append(spb.StreamRequest(control=spb.StreamControl(command=CLOSE)))
    with trio.fail_after(TIMEOUT):
        responses, code = await converse(address, requests)
    kinds = [kind(r) for r in responses]
    assert "ready" in kinds
    assert kinds[-1] == "closed"
    assert code == 1000
    by_sink: dict[str, list[tuple[int, bytes]]] = {}
    for response in responses:
        if kind(response) != "result" or "_status" in response.result.data_outputs:
            continue
        for sink, buffer in response.result.data_outputs.items():
            by_sink.setdefault(sink, []).append((response.result.sequence, buffer.text.text_data))
    expected = [(0, b"x"), (1, b"y"), (2, b"z")]
    assert by_sink == {"left": expected, "right": expected}


async def test_a_wsproto_client_gets_a_typed_error_naming_the_field(
    start_server: ServerFactory,
) -> None:
    address = await start_server(web_port=0)
    bad = manifest([("x", "NoSuchNode")])
    with trio.fail_after(TIMEOUT):
        responses, _ = await converse(address, [init(bad)])
        (error,) = [r.error for r in responses if kind(r) == "error"]
        # The server keeps serving: a normal session right after.
        good, code = await converse(
            address,
            [init(FAN), spb.StreamRequest(control=spb.StreamControl(command=CLOSE))],
        )
    assert error.error_type == pb.ERROR_TYPE_VALIDATION
    assert "nodes[0].node_type" in error.message
    assert kind(good[-1]) == "closed"
    assert code == 1000
