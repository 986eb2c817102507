"""Turning errors into the protocol's typed ErrorResponse and gRPC status codes (sans-IO).

The original server reported every streaming error as INTERNAL; here each error
keeps its type:

============================================  ==================  =================
error                                         ErrorType           gRPC status
============================================  ==================  =================
ManifestError, InvalidMediaError,             VALIDATION          INVALID_ARGUMENT
InvalidRequestError, UnknownNodeError
NodeError (failing_node_id set)               NODE_EXECUTION      INTERNAL
ResourceLimitError                            RESOURCE_LIMIT      RESOURCE_EXHAUSTED
SessionRejected                               RESOURCE_LIMIT      RESOURCE_EXHAUSTED
                                                                  (UNAVAILABLE when
                                                                  shutting down)
AuthenticationError                           AUTHENTICATION      UNAUTHENTICATED
VersionMismatchError                          VERSION_MISMATCH    FAILED_PRECONDITION
anything else                                 INTERNAL            INTERNAL
============================================  ==================  =================

A lost input (a node failed on one input, recovered, and the session goes on) is a
NODE_EXECUTION ErrorResponse in the stream too, told apart from a fatal error by its
``context`` alone, since the protocol has no field for it:

1. The context of a lost input is ``lost_input sequence=<n>: <sentence>``: a marker
   for programs (``<n>`` the input's sequence, ASCII digits), then ``": "`` and a
   sentence for people, which programs must not parse.
2. No other context starts with ``lost_input``; a fatal NodeError's context is
   ``input sequence <n>``.
3. :func:`lost_input_response` writes this format and :func:`lost_input_sequence`
   reads it: the server and the client share these two, never the sentence.
"""

from __future__ import annotations

from remotemedia.errors import (
    AuthenticationError,
    InvalidMediaError,
    InvalidRequestError,
    ManifestError,
    NodeError,
    RemoteMediaError,
    ResourceLimitError,
    SessionRejected,
    UnknownNodeError,
    VersionMismatchError,
)
from remotemedia.v1 import common_pb2 as pb

__all__ = [
    "SHUTTING_DOWN",
    "error_response",
    "grpc_status",
    "lost_input_response",
    "lost_input_sequence",
    "websocket_close_code",
]

SHUTTING_DOWN = "Server is shutting down"
"""The ``closed`` reason of sessions a server's drain ended (clients act on it: a
reconnecting Python client moves such a session elsewhere)."""

_VALIDATION = (ManifestError, InvalidMediaError, InvalidRequestError, UnknownNodeError)


def error_response(error: BaseException) -> pb.ErrorResponse:
    """The ErrorResponse that reports ``error`` to a client."""
    if isinstance(error, NodeError):
        context = f"input sequence {error.sequence}" if error.sequence is not None else ""
        return pb.ErrorResponse(
            error_type=pb.ERROR_TYPE_NODE_EXECUTION,
            message=str(error),
            failing_node_id=error.node_id,
            context=context,
        )
    if isinstance(error, ManifestError):
        return pb.ErrorResponse(
            error_type=pb.ERROR_TYPE_VALIDATION,
            message=str(error),
            context="manifest: " + "; ".join(p.path for p in error.problems),
        )
    if isinstance(error, _VALIDATION):
        return pb.ErrorResponse(error_type=pb.ERROR_TYPE_VALIDATION, message=str(error))
    if isinstance(error, ResourceLimitError | SessionRejected):
        return pb.ErrorResponse(error_type=pb.ERROR_TYPE_RESOURCE_LIMIT, message=str(error))
    if isinstance(error, AuthenticationError):
        return pb.ErrorResponse(error_type=pb.ERROR_TYPE_AUTHENTICATION, message=str(error))
    if isinstance(error, VersionMismatchError):
        return pb.ErrorResponse(error_type=pb.ERROR_TYPE_VERSION_MISMATCH, message=str(error))
    if isinstance(error, RemoteMediaError):
        return pb.ErrorResponse(error_type=pb.ERROR_TYPE_INTERNAL, message=str(error))
    return pb.ErrorResponse(
        error_type=pb.ERROR_TYPE_INTERNAL,
        message=f"Internal server error ({type(error).__name__}); the server log has details.",
    )


_LOST_INPUT = "lost_input"
_SEQUENCE = " sequence="


def lost_input_response(error: NodeError, sequence: int) -> pb.ErrorResponse:
    """The ErrorResponse reporting that a node lost input ``sequence`` and recovered.

    Args:
        error: Why the node lost the input (its message goes to ``message``).
        sequence: The sequence number of the lost input.

    Returns:
        A NODE_EXECUTION response whose ``context`` follows rule 1 above.
    """
    response = error_response(error)
    response.context = (
        f"{_LOST_INPUT}{_SEQUENCE}{sequence}: "
        f"input sequence {sequence} was lost; the session continues"
    )
    return response


def lost_input_sequence(response: pb.ErrorResponse) -> int | None:
    """The sequence number of the input ``response`` reports lost, if it reports one.

    Returns:
        The sequence of a lost input (the session goes on), or None for any other
        error, which ends the session.
    """
    marker, _, _ = response.context.partition(": ")
    tag, _, digits = marker.partition(_SEQUENCE)
    if tag != _LOST_INPUT or not (digits.isascii() and digits.isdigit()):
        return None
    return int(digits)


def grpc_status(error: BaseException) -> str:
    """The name of the gRPC status code for ``error`` (a ``grpclib.const.Status`` member)."""
    if isinstance(error, SessionRejected):
        return "UNAVAILABLE" if error.shutting_down else "RESOURCE_EXHAUSTED"
    if isinstance(error, _VALIDATION):
        return "INVALID_ARGUMENT"
    if isinstance(error, ResourceLimitError):
        return "RESOURCE_EXHAUSTED"
    if isinstance(error, AuthenticationError):
        return "UNAUTHENTICATED"
    if isinstance(error, VersionMismatchError):
        return "FAILED_PRECONDITION"
    return "INTERNAL"


_CLOSE_CODES = {
    "INVALID_ARGUMENT": 1007,  # invalid payload data
    "UNAUTHENTICATED": 1008,  # policy violation
    "FAILED_PRECONDITION": 1008,
    "RESOURCE_EXHAUSTED": 1013,  # try again later
    "UNAVAILABLE": 1013,
    "INTERNAL": 1011,  # internal error
}


def websocket_close_code(error: BaseException) -> int:
    """The WebSocket close code (RFC 6455 7.4) that ends a stream refused with ``error``.

    The same error's gRPC status, in WebSocket terms: the typed ``error`` response
    sent before the close says the rest.
    """
    return _CLOSE_CODES[grpc_status(error)]
