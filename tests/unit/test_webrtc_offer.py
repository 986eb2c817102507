"""WebRTC signalling without a peer: the offer's body, refusals, ICE settings, lazy imports."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any

import pytest

from remotemedia.config import ConfigError, IceServer, WebRtcConfig
from remotemedia.errors import InvalidRequestError, SessionRejected
from remotemedia.transport.webrtc_offer import (
    audio_direction,
    parse_offer,
    refusal_of,
)
from remotemedia.v1 import streaming_pb2 as spb

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\n"
INIT = spb.StreamRequest(init=spb.StreamInit(client_version="v1")).SerializeToString()


def _body(**fields: object) -> bytes:
    return json.dumps({"type": "offer", "sdp": SDP, **fields}).encode()


def test_an_offer_carries_the_sdp_and_the_init_as_sent() -> None:
    offer = parse_offer(_body(init=base64.b64encode(INIT).decode()))
    assert offer.sdp == SDP
    assert offer.init == INIT


def test_an_offer_may_carry_the_clients_traceparent() -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    offer = parse_offer(_body(pipeline="passthrough", traceparent=traceparent))
    assert offer.traceparent == traceparent
    assert parse_offer(_body(pipeline="passthrough", traceparent=7)).traceparent is None


def test_a_bundled_pipeline_name_becomes_its_init() -> None:
    offer = parse_offer(_body(pipeline="passthrough", audio="none"))
    assert offer.audio == "none"
    init = spb.StreamRequest.FromString(offer.init).init
    assert init.client_version == "v1"
    assert [node.node_type for node in init.manifest.nodes] == ["PassThrough"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "a JSON object"),
        (json.dumps({"sdp": "hello", "init": ""}).encode(), "offer.sdp"),
        (_body(type="answer", init=""), "offer.type must be 'offer'"),
        (_body(), "offer.init is missing"),
        (_body(init=7), "offer.init must be a base64 string"),
        (_body(init="***"), "offer.init is not valid base64"),
        (_body(init=base64.b64encode(b"\xff\xff").decode()), "not a serialized StreamRequest"),
        (
            _body(init=base64.b64encode(spb.StreamRequest().SerializeToString()).decode()),
            "whose 'init' is set",
        ),
        (_body(pipeline="nope"), "offer.pipeline 'nope' is not a bundled pipeline"),
        (_body(pipeline="vad", init=""), "not both"),
        (_body(pipeline="vad", audio="speakers"), "offer.audio must be one of track"),
    ],
)
def test_a_bad_offer_is_refused_naming_its_field(body: bytes, words: str) -> None:
    with pytest.raises(InvalidRequestError, match=words):
        parse_offer(body)


def test_refusals_carry_the_typed_error_readable_and_as_the_wire_message() -> None:
    status, body = refusal_of(InvalidRequestError("offer.sdp is wrong"))
    document = json.loads(body)
    assert status == 400
    assert document["error"]["type"] == "VALIDATION"
    wire = spb.StreamResponse.FromString(base64.b64decode(document["response"]))
    assert wire.error.message == "offer.sdp is wrong"
    full, _ = refusal_of(SessionRejected("The server is at its limit."))
    assert full == 503


def test_the_offers_audio_direction_is_read_from_its_audio_section() -> None:
    audio = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
    data = "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=sendrecv\r\n"
    assert audio_direction(SDP + audio + "a=recvonly\r\n" + data) == "recvonly"
    assert audio_direction(SDP + audio + data) == "sendrecv"  # the default
    assert audio_direction(SDP + data) is None


def test_ice_servers_and_host_addresses_are_checked() -> None:
    turn = IceServer.parse("turn:user:secret@turn.example.com:3478?transport=udp")
    assert turn == IceServer("turn:turn.example.com:3478?transport=udp", "user", "secret")
    assert IceServer.parse("stun:stun.example.com") == IceServer("stun:stun.example.com")
    with pytest.raises(ConfigError, match="not a STUN or TURN URL"):
        IceServer.parse("https://turn.example.com")
    with pytest.raises(ConfigError, match="credentials go with a TURN server"):
        IceServer.parse("stun:user:secret@stun.example.com")
    with pytest.raises(ConfigError, match="not an IP address"):
        WebRtcConfig(host_addresses=("eth0",))


def test_the_server_core_never_imports_aiortc() -> None:
    # The WebRTC edge is imported when it starts; serving and the web edge must not
    # pull aiortc (and its media stack) in at import.
    code = (
        "import sys, remotemedia.transport.serving, remotemedia.transport.web; "
        "print(sorted(m for m in ('aiortc', 'aioice', 'av') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("mode", ["auto", "on"])
async def test_without_the_extra_webrtc_is_off_or_refused_by_its_mode(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from remotemedia.config import ServerConfig
    from remotemedia.transport import web

    monkeypatch.setitem(sys.modules, "remotemedia.transport.webrtc", None)  # as if not installed
    config = ServerConfig(web_port=0, webrtc=WebRtcConfig(mode=mode))
    unused: Any = None
    if mode == "auto":
        assert await web._start_webrtc(unused, config, unused, unused) is None
    else:
        with pytest.raises(ConfigError, match=r"pip install 'remotemedia\[webrtc\]'"):
            await web._start_webrtc(unused, config, unused, unused)
