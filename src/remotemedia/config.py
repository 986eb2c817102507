"""Server configuration: limits, auth and addresses, read once at startup.

The CLI builds a :class:`ServerConfig` from flags and the original runtime's
environment variables (``GRPC_BIND_ADDRESS``, ``GRPC_AUTH_TOKENS``,
``GRPC_REQUIRE_AUTH``); nothing else in the package reads the environment.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs

from remotemedia.errors import RemoteMediaError

__all__ = [
    "DEFAULT_SESSION_BUFFER_BYTES",
    "AuthConfig",
    "ConfigError",
    "IceServer",
    "Limits",
    "NodeDefaults",
    "ServerConfig",
    "WebRtcConfig",
    "WorkerConfig",
    "auth_from_env",
    "node_config_from_dict",
]

MIB = 1024 * 1024

DEFAULT_SESSION_BUFFER_BYTES = 32 * MIB
"""Bytes one session may hold queued across its channels (see session/budget.py)."""


class ConfigError(RemoteMediaError):
    """The server configuration is inconsistent; the message says what to change."""


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{attribute.name} must be positive, got {value}.")


def _not_negative(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value < 0:
        raise ConfigError(f"{attribute.name} must be 0 or more, got {value}.")


@attrs.frozen
class Limits:
    """Resource limits and the strictness of manifest checks, per server and per session.

    Attributes:
        max_sessions: Concurrent streaming sessions; more are refused with
            RESOURCE_EXHAUSTED.
        max_nodes: Nodes in one manifest.
        max_message_bytes: Largest gRPC message either way.
        max_chunk_samples: Samples (all channels) in one audio chunk.
        idle_timeout: Seconds a session may go without a message from its client.
        max_duration: Seconds a session may last.
        init_timeout: Seconds a session's nodes may take to initialise.
        max_connections: Client connections open at once; more are answered with
            GOAWAY and closed.
        handshake_timeout: Seconds a new connection may take to send its first
            request; then it is closed (GOAWAY).
        keepalive_interval: Seconds a connection may be silent before the server
            pings it (native transport).
        keepalive_timeout: Seconds a pinged connection has to answer; then it is
            closed and its calls end (native transport).
        max_session_buffer_bytes: Bytes one session may hold queued in its request,
            edge, result and response buffers together; a sender that would exceed
            it waits (backpressure), so a server holds at most this times
            ``max_sessions`` in queues.
        strict_params: Refuse manifests whose node params include names the node
            type does not declare (``serve --strict-params``). Off by default: such
            params are ignored with a warning, as the original runtime ignored them.
            Kept here rather than on :class:`ServerConfig` because these limits are
            what every request handler already receives; a client cannot change it.
    """

    max_sessions: int = attrs.field(default=200, validator=_positive)
    max_nodes: int = attrs.field(default=64, validator=_positive)
    max_message_bytes: int = attrs.field(default=10 * MIB, validator=_positive)
    max_chunk_samples: int = attrs.field(default=1_000_000, validator=_positive)
    idle_timeout: float = attrs.field(default=60.0, validator=_positive)
    max_duration: float = attrs.field(default=3600.0, validator=_positive)
    init_timeout: float = attrs.field(default=60.0, validator=_positive)
    max_connections: int = attrs.field(default=1000, validator=_positive)
    handshake_timeout: float = attrs.field(default=10.0, validator=_positive)
    keepalive_interval: float = attrs.field(default=120.0, validator=_positive)
    keepalive_timeout: float = attrs.field(default=20.0, validator=_positive)
    max_session_buffer_bytes: int = attrs.field(
        default=DEFAULT_SESSION_BUFFER_BYTES, validator=_positive
    )
    strict_params: bool = False

    def lowered(
        self,
        *,
        max_memory_bytes: int = 0,
        max_timeout_ms: int = 0,
        max_audio_samples: int = 0,
    ) -> Limits:
        """Apply a client's ``ResourceLimits``: each may lower a limit, never raise it.

        Zero means "not set", as in the protocol. ``max_memory_bytes`` bounds message
        size, ``max_timeout_ms`` the session's duration and ``max_audio_samples`` the
        samples per chunk.
        """
        return attrs.evolve(
            self,
            max_message_bytes=_lower(self.max_message_bytes, max_memory_bytes),
            max_duration=_lower(self.max_duration, max_timeout_ms / 1000),
            max_chunk_samples=_lower(self.max_chunk_samples, max_audio_samples),
        )


N = TypeVar("N", int, float)


def _lower(limit: N, requested: float) -> N:
    return type(limit)(min(limit, requested)) if requested > 0 else limit


@attrs.frozen
class AuthConfig:
    """Bearer-token authentication.

    Attributes:
        tokens: The accepted tokens.
        required: Whether every RPC must carry one of them.
        exempt_health: Let the gRPC health service answer without a token (for
            load balancers and orchestrators).
    """

    tokens: tuple[str, ...] = ()
    required: bool = False
    exempt_health: bool = True

    def __attrs_post_init__(self) -> None:
        if self.required and not self.tokens:
            raise ConfigError(
                "Authentication is required but no tokens are configured; set "
                "GRPC_AUTH_TOKENS (comma-separated) or pass --auth-token."
            )


def auth_from_env(env: Mapping[str, str], extra_tokens: tuple[str, ...] = ()) -> AuthConfig:
    """Read auth settings the way the original runtime does.

    Tokens come from ``GRPC_AUTH_TOKENS`` (comma-separated, trimmed) plus any given
    on the command line. Auth is required when tokens exist, unless
    ``GRPC_REQUIRE_AUTH=false``; ``GRPC_REQUIRE_AUTH=true`` without tokens is an error.
    """
    tokens = tuple(
        t.strip() for t in env.get("GRPC_AUTH_TOKENS", "").split(",") if t.strip()
    ) + tuple(t for t in extra_tokens if t)
    flag = env.get("GRPC_REQUIRE_AUTH", "").strip().lower()
    if flag not in ("", "true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"GRPC_REQUIRE_AUTH must be true or false, got {flag!r}.")
    required = bool(tokens) if flag == "" else flag in ("true", "1", "yes")
    return AuthConfig(tokens=tokens, required=required)


@attrs.frozen
class WorkerConfig:
    """How the server runs worker processes (see ``remotemedia.executors``).

    Attributes:
        call_timeout: Seconds a worker may work on one input without any output
            before it counts as hung and is replaced.
        start_timeout: Seconds a worker may take to load its model and be ready.
        stop_grace: Seconds a stopping worker gets before SIGTERM, and again
            before SIGKILL.
        max_rss_mb: Replace a worker between inputs once its resident memory
            exceeds this many MiB (a slow leak in a model library); 0: never.
    """

    call_timeout: float = attrs.field(default=120.0, validator=_positive)
    start_timeout: float = attrs.field(default=120.0, validator=_positive)
    stop_grace: float = attrs.field(default=2.0, validator=_positive)
    max_rss_mb: float = attrs.field(default=0.0, validator=_not_negative)


@attrs.frozen
class NodeDefaults:
    """What the server's operator sets for every node of one type (``--node-config``).

    Trusted, unlike a client's manifest: params here may name files on the server (a
    model folder, a hub id) and set params no client may (``trust_remote_code``).

    Attributes:
        params: Defaults for the node type's params; a manifest's own values win,
            except for params a client may not set.
        python: The Python of the node type's worker environment, replacing the one
            the node type declares.
        requirements: The requirements of that environment, replacing the declared
            ones (pin what your machine has: ``torch==2.13.0``, say).
    """

    params: Mapping[str, Any] = attrs.field(factory=dict)
    python: str | None = None
    requirements: tuple[str, ...] | None = None


def node_config_from_dict(document: Any, source: str) -> dict[str, NodeDefaults]:
    """Read a node config document: node type -> ``params``, ``python``, ``requirements``.

    Args:
        document: The parsed YAML or JSON.
        source: Where it came from (a file name), for error messages.

    Raises:
        ConfigError: Naming the place (``source: TransformersPipelineNode.params``)
            and what is wrong there.
    """
    if not isinstance(document, Mapping):
        raise ConfigError(
            f"{source}: a node config maps node types to their settings, e.g. "
            "'TransformersPipelineNode: {params: {model: /models/x}}'."
        )
    config = {}
    for node_type, entry in document.items():
        where = f"{source}: {node_type}"
        if entry is None:
            entry = {}
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where} must be a mapping with params, python, requirements.")
        unknown = sorted(set(entry) - {"params", "python", "requirements"})
        if unknown:
            raise ConfigError(
                f"{where}.{unknown[0]} is not a setting; use params, python or requirements."
            )
        params = entry.get("params") or {}
        if not isinstance(params, Mapping):
            raise ConfigError(f"{where}.params must be a mapping of param names to values.")
        python = entry.get("python")
        if python is not None and not isinstance(python, str | int | float):
            raise ConfigError(f"{where}.python must be a version such as '3.12' or a path.")
        requirements = entry.get("requirements")
        if requirements is not None:
            if not isinstance(requirements, list) or not all(
                isinstance(r, str) for r in requirements
            ):
                raise ConfigError(f"{where}.requirements must be a list of requirement strings.")
            requirements = tuple(requirements)
        config[str(node_type)] = NodeDefaults(
            params=dict(params),
            python=str(python) if python is not None else None,
            requirements=requirements,
        )
    return config


TRANSPORTS = ("native", "grpclib")
"""The gRPC server implementations (``serve --transport``)."""


def _one_of(choices: tuple[str, ...]) -> Callable[[object, attrs.Attribute[Any], str], None]:
    def check(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
        if value not in choices:
            raise ConfigError(
                f"{attribute.name} must be one of {', '.join(choices)}; got {value!r}."
            )

    return check


_HOST_NAME = re.compile(r"\*|\.?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?")


def _host_names(instance: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for name in value:
        if not _HOST_NAME.fullmatch(name):
            raise ConfigError(
                f"--web-allowed-hosts {name!r} is not a host name: give one like "
                "media.example.com (no scheme, no port), .example.com for it and its "
                "subdomains, or '*' for any (IP addresses are always allowed)."
            )


_ICE_SCHEMES = ("stun", "stuns", "turn", "turns")


@attrs.frozen
class IceServer:
    """A STUN or TURN server the WebRTC edge's peers use (``--webrtc-ice-server``).

    Attributes:
        url: ``stun:host[:port]`` or ``turn:host[:port][?transport=udp|tcp]``
            (``stuns:``/``turns:`` over TLS), without credentials.
        username: The TURN username, if any.
        credential: The TURN password, if any.
    """

    url: str
    username: str | None = None
    credential: str | None = None

    @classmethod
    def parse(cls, text: str) -> IceServer:
        """Parse ``turn:USER:PASSWORD@HOST[:PORT][?transport=...]`` (or a plain URL).

        Raises:
            ConfigError: It is not a STUN or TURN URL.
        """
        scheme, colon, rest = text.partition(":")
        if not colon or scheme not in _ICE_SCHEMES or not rest or rest.startswith("//"):
            raise ConfigError(
                f"--webrtc-ice-server {text!r} is not a STUN or TURN URL: give one like "
                "stun:stun.example.com:3478 or turn:USER:PASSWORD@turn.example.com:3478"
                "?transport=udp."
            )
        userinfo, at, address = rest.rpartition("@")
        if not at:
            return cls(text)
        username, colon, credential = userinfo.partition(":")
        if not username or not colon or not scheme.startswith("turn"):
            raise ConfigError(
                f"--webrtc-ice-server {scheme}:...@{address}: credentials go with a TURN "
                "server, as USER:PASSWORD@ before its host."
            )
        return cls(f"{scheme}:{address}", username, credential)


def _ip_addresses(
    instance: object, attribute: attrs.Attribute[Any], value: tuple[str, ...]
) -> None:
    for address in value:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ConfigError(
                f"--webrtc-host-address {address!r} is not an IP address: give one of this "
                "machine's addresses, such as 192.0.2.10 (127.0.0.1 for loopback only)."
            ) from None


WEBRTC_MODES = ("auto", "on", "off")
"""``serve --webrtc``: on when its extra is installed, on (or fail), off."""


@attrs.frozen
class WebRtcConfig:
    """The WebRTC edge (``POST /v1/webrtc/offer`` on the web port).

    Attributes:
        mode: ``auto``: on when ``remotemedia[webrtc]`` is installed; ``on``: on, and
            the server refuses to start without it; ``off``: the page uses the
            WebSocket.
        ice_servers: STUN/TURN servers; none by default, so no address outside this
            machine is ever contacted (aiortc would ask a public STUN server).
        host_addresses: The local addresses offered as ICE host candidates; empty:
            every address of the machine but loopback (aioice's own choice).
    """

    mode: str = attrs.field(default="auto", validator=_one_of(WEBRTC_MODES))
    ice_servers: tuple[IceServer, ...] = ()
    host_addresses: tuple[str, ...] = attrs.field(default=(), validator=_ip_addresses)


@attrs.frozen
class ServerConfig:
    """Everything ``remotemedia serve`` needs.

    Attributes:
        bind: ``host:port`` to listen on (port 0 picks a free one).
        auth: Authentication settings.
        limits: Resource limits.
        metrics_port: Port of the Prometheus ``/metrics`` HTTP endpoint; None: off.
        metrics_host: Interface the metrics endpoint listens on.
        drain_timeout: Seconds live sessions get to finish on SIGINT/SIGTERM.
        drain_delay: Seconds between SIGINT/SIGTERM and the drain: health reports
            NOT_SERVING at once, but the server goes on taking new sessions this long,
            so that load balancers (which see NOT_SERVING at their next check) take
            it out of rotation before it refuses anyone.
        allow_client_paths: Accept node params that name files on the server (a
            model path) from clients; off by default, since a client could then make
            the server open any file it can read.
        executors: Node type -> ``inprocess`` or ``process``, overriding the default
            executor rules (a node's ``executor:`` in a manifest still wins).
        workers: Timeouts and the memory budget of worker processes.
        reuse_port: Listen with SO_REUSEPORT, so that several server processes share
            the port (``serve --processes``) and the kernel spreads connections.
        transport: The gRPC server: ``native`` (HTTP/2 on Trio) or ``grpclib``
            (grpclib on asyncio inside trio-asyncio, the reference).
        web_port: Port of the browser edge (the page and StreamPipeline over a
            WebSocket, on the bind host); None: off, 0: any free port.
        web_allowed_origins: Origins, besides the page's own, whose pages may open
            WebSocket sessions (``*``: any).
        web_allowed_hosts: Host names, besides IP literals, ``localhost`` (and
            ``*.localhost``) and this machine's host name, that the browser edge
            answers to in a request's ``Host`` header (a DNS-rebinding page sends its
            own name); ``.example.com`` also allows its subdomains, ``*`` any name.
        webrtc: The WebRTC edge beside the WebSocket, on the web port.
        env_dir: Where the Python environments of model nodes are built and kept;
            None: ``~/.cache/remotemedia/envs``.
        env_installer: ``pip`` (the server's own, with pip's configuration) or
            ``uv`` installs their packages.
        node_config: What the operator sets per node type (params, environment).
        prepare_envs: Node types (or ``all``) whose environments are built before
            the server starts listening.
    """

    bind: str = "127.0.0.1:50051"
    auth: AuthConfig = attrs.Factory(AuthConfig)
    limits: Limits = attrs.Factory(Limits)
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    drain_timeout: float = 10.0
    drain_delay: float = attrs.field(default=0.0, validator=_not_negative)
    allow_client_paths: bool = False
    executors: Mapping[str, str] = attrs.field(factory=dict)
    workers: WorkerConfig = attrs.Factory(WorkerConfig)
    reuse_port: bool = False
    transport: str = attrs.field(default="native", validator=_one_of(TRANSPORTS))
    web_port: int | None = None
    web_allowed_origins: tuple[str, ...] = ()
    web_allowed_hosts: tuple[str, ...] = attrs.field(default=(), validator=_host_names)
    webrtc: WebRtcConfig = attrs.Factory(WebRtcConfig)
    env_dir: str | None = None
    env_installer: str = attrs.field(default="pip", validator=_one_of(("pip", "uv")))
    node_config: Mapping[str, NodeDefaults] = attrs.field(factory=dict)
    prepare_envs: tuple[str, ...] = ()

    @property
    def host_port(self) -> tuple[str, int]:
        """The bind address split into host and port."""
        host, sep, port = self.bind.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"Bind address {self.bind!r} must look like host:port.")
        return host.strip("[]") or "0.0.0.0", int(port)
