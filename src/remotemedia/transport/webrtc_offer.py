"""WebRTC signalling without I/O: the offer a browser POSTs, and what it gets back.

``POST /v1/webrtc/offer`` takes a JSON object:

- ``sdp``: the browser's SDP offer, ICE gathering complete (no trickle);
- ``init``: the session's init, base64 of a serialized ``StreamRequest`` whose
  ``init`` is set, exactly the first message the WebSocket sends; or instead
  ``pipeline``: the name of a bundled pipeline (``transcribe``, ``converse``, ...);
- ``audio`` (optional): where audio outputs go, :data:`AUDIO_OUT`; ``track`` by
  default.

The answer is ``200`` with ``{"type": "answer", "sdp", "session_id"}``. A refusal
is an HTTP error status with the typed error the other edges send, as JSON
(``error``: type, message, context, failing node) and as the serialized
``StreamResponse`` (``response``, base64), so a client decodes it as it decodes a
WebSocket's error.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Protocol

import attrs

from remotemedia.errors import InvalidRequestError, RemoteMediaError, SessionRejected
from remotemedia.examples import example_names, example_path
from remotemedia.manifest import load_manifest
from remotemedia.service.convert import manifest_to_wire
from remotemedia.service.status import error_response
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import streaming_pb2 as spb

__all__ = [
    "AUDIO_OUT",
    "MAX_OFFER_BYTES",
    "Answerer",
    "Offer",
    "answer_body",
    "audio_direction",
    "http_status",
    "parse_offer",
    "refusal_body",
    "refusal_of",
]

AUDIO_OUT = ("track", "channel", "none")
"""Where an offer may ask for the session's audio outputs (``offer.audio``)."""

MAX_OFFER_BYTES = 256 * 1024
"""Bytes of an offer's body beyond its init (an SDP offer is a few kilobytes)."""

_STATUS = {
    pb.ERROR_TYPE_VALIDATION: 400,
    pb.ERROR_TYPE_AUTHENTICATION: 401,
    pb.ERROR_TYPE_VERSION_MISMATCH: 412,
    pb.ERROR_TYPE_RESOURCE_LIMIT: 413,
}


class Answerer(Protocol):
    """What the browser edge asks of the WebRTC edge (which it does not import)."""

    def description(self) -> bytes:
        """The JSON body of ``GET /v1/webrtc``: ``{"ice_servers": [...]}``."""

    async def answer(self, offer: Offer) -> tuple[int, bytes]:
        """Start the offer's session; the HTTP status and JSON body to reply with."""


@attrs.frozen
class Offer:
    """A parsed offer: the browser's SDP and the session's first request."""

    sdp: str
    init: bytes
    """A serialized ``StreamRequest`` with ``init`` set."""
    audio: str = "track"
    """Where the session's audio outputs go: ``track`` (played by the browser),
    ``channel`` (as results on the data channel, as over the WebSocket) or ``none``
    (not sent: the client does not want them, such as the VAD's pass-through audio)."""
    traceparent: str | None = None
    """A W3C traceparent to put the session in the client's trace (``offer.traceparent``
    or the request's ``traceparent`` header; a malformed one is ignored)."""


def parse_offer(body: bytes) -> Offer:
    """Parse and check an offer's body.

    Raises:
        InvalidRequestError: It is not what the endpoint takes; the message names
            the field.
    """
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidRequestError(
            f"The offer is not JSON ({error}); POST a JSON object with 'sdp' and 'init'."
        ) from None
    if not isinstance(document, dict):
        raise InvalidRequestError("The offer must be a JSON object with 'sdp' and 'init'.")
    sdp = document.get("sdp")
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        raise InvalidRequestError("offer.sdp must be the browser's SDP offer (text from 'v=0').")
    kind = document.get("type", "offer")
    if kind != "offer":
        raise InvalidRequestError(f"offer.type must be 'offer', not {_shown(kind)}.")
    if "init" in document and "pipeline" in document:
        raise InvalidRequestError("Give offer.init or offer.pipeline, not both.")
    audio = document.get("audio", "track")
    if audio not in AUDIO_OUT:
        raise InvalidRequestError(
            f"offer.audio must be one of {', '.join(AUDIO_OUT)}, not {_shown(audio)}."
        )
    traceparent = document.get("traceparent")
    traceparent = traceparent if isinstance(traceparent, str) else None
    if "pipeline" in document:
        return Offer(sdp, _bundled(document["pipeline"]), audio, traceparent)
    if "init" not in document:
        raise InvalidRequestError(
            "offer.init is missing: base64 of the serialized StreamRequest with the "
            "session's init (or offer.pipeline: a bundled pipeline's name)."
        )
    return Offer(sdp, _init(document["init"]), audio, traceparent)


def _init(value: Any) -> bytes:
    if not isinstance(value, str):
        raise InvalidRequestError("offer.init must be a base64 string.")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError("offer.init is not valid base64.") from None
    try:
        request = spb.StreamRequest.FromString(data)
    except Exception:
        raise InvalidRequestError("offer.init is not a serialized StreamRequest.") from None
    if request.WhichOneof("request") != "init":
        raise InvalidRequestError("offer.init must be a StreamRequest whose 'init' is set.")
    return data


def _bundled(name: Any) -> bytes:
    path = example_path(name) if isinstance(name, str) and name in example_names() else None
    if path is None:
        names = ", ".join(example_names())
        raise InvalidRequestError(
            f"offer.pipeline {_shown(name)} is not a bundled pipeline (there are: {names})."
        )
    init = spb.StreamInit(manifest=manifest_to_wire(load_manifest(path)), client_version="v1")
    return spb.StreamRequest(init=init).SerializeToString()


_DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


def audio_direction(sdp: str) -> str | None:
    """The direction of an offer's first audio section, as the offerer sees it.

    ``sendrecv`` (a microphone, and it plays what it gets), ``sendonly``,
    ``recvonly``, ``inactive``; None if the offer has no audio.
    """
    in_audio = False
    direction: str | None = None
    for line in sdp.splitlines():
        if line.startswith("m="):
            if in_audio:
                break
            in_audio = line.startswith("m=audio ")
            direction = "sendrecv" if in_audio else None  # the default (RFC 4566)
        elif in_audio and line.startswith("a=") and line[2:].strip() in _DIRECTIONS:
            direction = line[2:].strip()
    return direction


def answer_body(sdp: str, session_id: str) -> bytes:
    """The JSON body of a ``200``: the server's SDP answer and the session's id."""
    return json.dumps({"type": "answer", "sdp": sdp, "session_id": session_id}).encode()


def http_status(error: pb.ErrorResponse, exception: BaseException | None = None) -> int:
    """The HTTP status of a refused offer: 503 when the server is full or draining."""
    if isinstance(exception, SessionRejected):
        return 503
    return _STATUS.get(error.error_type, 500)


def refusal_body(error: pb.ErrorResponse) -> bytes:
    """The JSON body of a refusal: the typed error, readable and as the wire's message."""
    wire = spb.StreamResponse(error=error).SerializeToString()
    return json.dumps(
        {
            "error": {
                "type": pb.ErrorType.Name(error.error_type).removeprefix("ERROR_TYPE_"),
                "message": error.message,
                "context": error.context,
                "failing_node_id": error.failing_node_id,
            },
            "response": base64.b64encode(wire).decode(),
        }
    ).encode()


def refusal_of(exception: RemoteMediaError) -> tuple[int, bytes]:
    """The status and body that refuse an offer for ``exception``."""
    error = error_response(exception)
    return http_status(error, exception), refusal_body(error)


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
