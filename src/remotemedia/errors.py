"""The one exception hierarchy of remotemedia.

Every error a user can see derives from :class:`RemoteMediaError`. Messages are full
sentences that name the offending thing (a manifest path, a node id, a field) and say
what to do about it. Foreign exceptions are translated into this hierarchy at the
boundary where they occur; cancellation is never caught and translated.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import attrs

__all__ = [
    "AuthenticationError",
    "ClientStalledError",
    "EnvironmentBuildError",
    "InvalidMediaError",
    "InvalidRequestError",
    "LinkProtocolError",
    "ManifestError",
    "ModelNotFoundError",
    "NodeEnvironmentError",
    "NodeError",
    "PipelineClosedError",
    "Problem",
    "RemoteMediaError",
    "ResourceLimitError",
    "ServerError",
    "SessionRejected",
    "UnknownNodeError",
    "UpstreamError",
    "VersionMismatchError",
    "leaf_errors",
]


class RemoteMediaError(Exception):
    """Base class of every error raised by remotemedia.

    Attributes:
        transient: True when retrying the same operation later may succeed.
    """

    transient: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


@attrs.frozen
class Problem:
    """One problem found in a manifest or in parameters.

    Attributes:
        path: Where the problem is, as a JSON path such as ``$.nodes[2].params.threshold``.
        message: What is wrong there, as a sentence a user can act on.
    """

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


MAX_LISTED_PROBLEMS = 50
"""Problems a ManifestError's message lists; all of them are in its ``problems``."""


class ManifestError(RemoteMediaError):
    """A pipeline manifest could not be loaded or failed validation.

    Carries every problem found, not only the first one.

    Attributes:
        problems: Each problem with the path where it occurs.
        source: Where the manifest came from (a file path, or ``<string>``), if known.
    """

    def __init__(self, problems: Iterable[Problem], *, source: str | None = None) -> None:
        self.problems = tuple(problems)
        self.source = source
        where = f" in {source}" if source else ""
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"The pipeline manifest{where} has {count} {noun}:"]
        lines += [f"  {problem}" for problem in self.problems[:MAX_LISTED_PROBLEMS]]
        if count > MAX_LISTED_PROBLEMS:
            # A hostile manifest can hold thousands; the message must stay readable.
            lines.append(f"  ... and {count - MAX_LISTED_PROBLEMS} more (see .problems).")
        super().__init__("\n".join(lines))


class InvalidMediaError(RemoteMediaError, ValueError):
    """A media value (audio, text, image, ...) is malformed."""


class LinkProtocolError(RemoteMediaError):
    """Bytes on a worker's control link break its protocol (:mod:`remotemedia.ipc.control`).

    The runtime treats it as a failed worker, like a crash: the worker is replaced.
    """


class ModelNotFoundError(RemoteMediaError):
    """A model file a node needs is not installed; the message says how to install it."""


class NodeEnvironmentError(RemoteMediaError):
    """A node's worker environment cannot be made: no interpreter fits, or a bad requirement."""


class EnvironmentBuildError(NodeEnvironmentError):
    """Installing the packages of a node's worker environment failed.

    Attributes:
        requirement: The requirement the installer could not satisfy, when it said so.
        log_path: The build's full log.
    """

    def __init__(self, message: str, *, requirement: str | None, log_path: str) -> None:
        super().__init__(message)
        self.requirement = requirement
        self.log_path = log_path


class UpstreamError(RemoteMediaError):
    """A service a node calls (a chat endpoint) failed or refused; the message says which."""

    transient = True


class NodeError(RemoteMediaError):
    """A node failed while initialising or processing data.

    Attributes:
        node_id: The id of the failing node in the manifest.
        node_type: The node's type name.
        sequence: The sequence number of the input being processed, if any.
    """

    def __init__(
        self,
        node_id: str,
        node_type: str,
        reason: str,
        *,
        sequence: int | None = None,
    ) -> None:
        self.node_id = node_id
        self.node_type = node_type
        self.sequence = sequence
        self.reason = reason
        at = f" while processing input #{sequence}" if sequence is not None else ""
        super().__init__(f"Node '{node_id}' ({node_type}) failed{at}: {reason}")


class UnknownNodeError(RemoteMediaError, KeyError):
    """Input was addressed to a node id that the pipeline does not contain."""

    def __str__(self) -> str:
        return self.message


class PipelineClosedError(RemoteMediaError):
    """Input to the pipeline was already ended by its user (``send_eof``)."""


class InvalidRequestError(RemoteMediaError):
    """A client broke the protocol; the message names the offending field.

    For example data before init, a second init, or a sequence that goes backwards.
    """


class ResourceLimitError(RemoteMediaError):
    """A request exceeds a configured limit; the message names the limit and its value.

    Limits cover sessions, nodes, message and chunk size, idle time and duration.
    """

    transient = True


class ClientStalledError(ResourceLimitError):
    """The client stopped taking results: none left for a whole idle timeout.

    A client that does not read would otherwise hold its session, its slot and its
    buffered results forever.
    """


class AuthenticationError(RemoteMediaError):
    """A request carried no valid token where one is required (gRPC UNAUTHENTICATED)."""


class VersionMismatchError(RemoteMediaError):
    """The client speaks a protocol version this server does not."""


class ServerError(RemoteMediaError):
    """A remotemedia server reported an error (client side).

    Attributes:
        error_type: The protocol's ErrorType name (``VALIDATION``, ``NODE_EXECUTION``,
            ...), or the gRPC status name when the call itself was refused.
        failing_node_id: The node that failed, for NODE_EXECUTION errors.
    """

    def __init__(self, message: str, *, error_type: str, failing_node_id: str = "") -> None:
        super().__init__(message)
        self.error_type = error_type
        self.failing_node_id = failing_node_id


class SessionRejected(RemoteMediaError):
    """A new session was refused: the server is full or shutting down.

    Attributes:
        shutting_down: True when refused because the server is draining.
    """

    transient = True

    def __init__(self, message: str, *, shutting_down: bool = False) -> None:
        super().__init__(message)
        self.shutting_down = shutting_down


def leaf_errors(error: BaseException) -> Iterator[BaseException]:
    """The errors inside an exception group, however nested (or the error itself).

    Trio and asyncio task groups wrap failures in groups; the boundaries that turn
    them into one user-facing error look through the nesting with this.
    """
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaf_errors(inner)
    else:
        yield error
