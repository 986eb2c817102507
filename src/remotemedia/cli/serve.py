"""``remotemedia serve``: the gRPC server, with graceful drain on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio
import yaml

from remotemedia.cli.envs import prepare_environments
from remotemedia.cli.say import say
from remotemedia.config import (
    TRANSPORTS,
    WEBRTC_MODES,
    ConfigError,
    IceServer,
    Limits,
    NodeDefaults,
    ServerConfig,
    WebRtcConfig,
    WorkerConfig,
    auth_from_env,
    node_config_from_dict,
)
from remotemedia.environments.cache import default_env_dir
from remotemedia.observability.logs import LOG_FORMATS, LOG_LEVELS
from remotemedia.transport import serving
from remotemedia.transport.serving import ServerAddress

__all__ = [
    "ENV_PREFIX",
    "Flag",
    "add_serve_arguments",
    "config_from_args",
    "env_name",
    "process_count",
    "resolve_flags",
    "run_server",
    "serve_flags",
]

MIB = 1024 * 1024
SWITCH_INTERVAL = 0.0005


_WORKER_FLAGS = {  # WorkerConfig field -> help; the flag is --worker-<field>
    "call_timeout": "seconds a worker may spend on one input without output before it is replaced",
    "start_timeout": "seconds a worker may take to load its model",
    "stop_grace": "seconds a stopping worker gets before SIGTERM, then before SIGKILL",
    "max_rss_mb": "replace a worker between inputs above this resident memory in MiB; 0: never",
}

ENV_PREFIX = "REMOTEMEDIA_"
# The original runtime's names, kept; every other flag is REMOTEMEDIA_<FLAG>.
_ORIGINAL_ENV = {"--bind": "GRPC_BIND_ADDRESS", "--auth-token": "GRPC_AUTH_TOKENS"}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def env_name(flag: str) -> str:
    """The environment variable that sets ``flag`` when it is not given.

    ``--max-sessions`` is ``REMOTEMEDIA_MAX_SESSIONS``; ``--bind`` and ``--auth-token``
    keep the original runtime's ``GRPC_BIND_ADDRESS`` and ``GRPC_AUTH_TOKENS``.
    """
    return _ORIGINAL_ENV.get(flag) or ENV_PREFIX + flag.removeprefix("--").replace("-", "_").upper()


@attrs.frozen
class Flag:
    """One ``serve`` flag: its name, how its text converts, its default and its help.

    A flag not given on the command line takes its environment variable
    (:func:`env_name`), then its default: a container is configured by environment
    alone. A repeatable flag's variable holds comma-separated values; a switch's
    holds true or false.
    """

    name: str
    help: str
    default: Any = None
    type: Callable[[str], Any] = str
    kind: str = "value"  # "value", "switch" (store_true) or "list" (repeatable)
    choices: tuple[str, ...] | None = None
    metavar: str | None = None

    @property
    def dest(self) -> str:
        """The attribute name argparse gives it."""
        return self.name.removeprefix("--").replace("-", "_")

    @property
    def env(self) -> str:
        """The environment variable that sets it."""
        return env_name(self.name)

    def from_env(self, text: str) -> Any:
        """The value its environment variable's ``text`` stands for.

        Raises:
            ConfigError: The text is not a value of this flag (the message names the
                variable).
        """
        if self.kind == "switch":
            if text.strip().lower() not in _TRUE + _FALSE:
                raise ConfigError(f"{self.env} must be true or false, got {text!r}.")
            return text.strip().lower() in _TRUE
        if self.kind == "list":
            return [item.strip() for item in text.split(",") if item.strip()]
        try:
            value = self.type(text)
        except ValueError:
            raise ConfigError(
                f"{self.env}={text!r} is not a valid value for {self.name} ({self.help})."
            ) from None
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{self.env} must be one of {', '.join(self.choices)}, got {text!r}.")
        return value


def serve_flags() -> tuple[Flag, ...]:
    """Every ``serve`` flag, in the order ``--help`` lists them (defaults from Limits)."""
    limits, workers = Limits(), WorkerConfig()
    return (
        Flag("--bind", "host:port to listen on (port 0 picks one)", "127.0.0.1:50051"),
        Flag(
            "--auth-token",
            "accept this bearer token (repeatable)",
            [],
            kind="list",
            metavar="TOKEN",
        ),
        Flag(
            "--health-requires-auth",
            "also require a token for the grpc.health.v1 service",
            False,
            kind="switch",
        ),
        Flag("--metrics-port", "serve Prometheus /metrics on this port", None, int),
        Flag("--metrics-host", "interface for /metrics", "127.0.0.1"),
        Flag("--max-sessions", "live sessions at once; more are refused", limits.max_sessions, int),
        Flag("--max-nodes", "nodes one manifest may have", limits.max_nodes, int),
        Flag(
            "--max-message-mb", "largest gRPC message, MiB", limits.max_message_bytes / MIB, float
        ),
        Flag("--max-chunk-samples", "largest audio chunk, samples", limits.max_chunk_samples, int),
        Flag(
            "--max-session-buffer-mb",
            "bytes one session may hold queued, MiB; senders wait beyond it",
            limits.max_session_buffer_bytes / MIB,
            float,
        ),
        Flag(
            "--max-connections",
            "client connections open at once; more get GOAWAY",
            limits.max_connections,
            int,
        ),
        Flag(
            "--handshake-timeout",
            "seconds a new connection may take to send its first request",
            limits.handshake_timeout,
            float,
        ),
        Flag(
            "--keepalive-interval",
            "seconds a connection may be silent before it is pinged (native transport)",
            limits.keepalive_interval,
            float,
        ),
        Flag(
            "--keepalive-timeout",
            "seconds a pinged connection has to answer before it is closed (native transport)",
            limits.keepalive_timeout,
            float,
        ),
        Flag(
            "--idle-timeout",
            "seconds a session may go without a message from its client",
            limits.idle_timeout,
            float,
        ),
        Flag("--max-duration", "seconds a session may last", limits.max_duration, float),
        Flag(
            "--init-timeout",
            "seconds a new stream has to send its manifest",
            limits.init_timeout,
            float,
        ),
        Flag("--drain-timeout", "seconds live sessions get to finish on shutdown", 10.0, float),
        Flag(
            "--drain-delay",
            "seconds between SIGTERM and the drain: health says NOT_SERVING at once while "
            "new sessions are still taken, so load balancers stop routing here first",
            0.0,
            float,
        ),
        Flag(
            "--executor",
            "run a node type 'inprocess' or in a worker 'process' (repeatable)",
            [],
            kind="list",
            metavar="NODE_TYPE=WHERE",
        ),
        *(
            Flag(f"--worker-{field.replace('_', '-')}", text, getattr(workers, field), float)
            for field, text in _WORKER_FLAGS.items()
        ),
        Flag(
            "--allow-client-paths",
            "let clients set params that name files on this machine (such as model_path)",
            False,
            kind="switch",
        ),
        Flag(
            "--processes",
            "server processes sharing the port (SO_REUSEPORT), each with its own limits and "
            "workers; 'auto': one per core this process may use",
            "1",
        ),
        Flag(
            "--transport",
            "the gRPC server: 'native' (HTTP/2 on Trio) or 'grpclib' (grpclib on asyncio in "
            "trio-asyncio)",
            ServerConfig().transport,
            choices=TRANSPORTS,
        ),
        Flag(
            "--web-port",
            "serve the browser page and StreamPipeline over a WebSocket (/v1/stream) on this "
            "port, on the --bind host",
            None,
            int,
        ),
        Flag(
            "--web-allowed-origins",
            "origins besides the page's own whose pages may open sessions, e.g. "
            "https://app.example.com (repeatable; '*': any)",
            [],
            kind="list",
            metavar="ORIGIN",
        ),
        Flag(
            "--web-allowed-hosts",
            "host names the browser edge answers to besides IP addresses, localhost and this "
            "machine's name, e.g. media.example.com (repeatable; '.example.com': it and its "
            "subdomains; '*': any)",
            [],
            kind="list",
            metavar="HOST",
        ),
        Flag(
            "--webrtc",
            "the WebRTC edge on the web port (POST /v1/webrtc/offer; the page uses it): "
            "'auto': on when remotemedia[webrtc] is installed, 'on': on or refuse to start, "
            "'off'",
            WebRtcConfig().mode,
            choices=WEBRTC_MODES,
        ),
        Flag(
            "--webrtc-ice-server",
            "a STUN or TURN server for WebRTC peers, e.g. stun:stun.example.com:3478 or "
            "turn:USER:PASSWORD@turn.example.com:3478?transport=udp (repeatable; none by "
            "default: nothing outside this machine is contacted)",
            [],
            kind="list",
            metavar="URL",
        ),
        Flag(
            "--webrtc-host-address",
            "a local address offered to WebRTC peers as an ICE host candidate (repeatable; "
            "default: every address but loopback; 127.0.0.1 for a loopback-only server)",
            [],
            kind="list",
            metavar="ADDRESS",
        ),
        Flag(
            "--node-config",
            "a YAML file of per-node-type settings: params defaults (model folders), and the "
            "python and requirements of a model node's environment",
            None,
            metavar="FILE",
        ),
        Flag(
            "--env-dir",
            "where model nodes' Python environments are built and kept",
            str(default_env_dir()),
            metavar="DIR",
        ),
        Flag(
            "--env-installer",
            "what installs their packages: 'pip' (this Python's pip, with its configuration) "
            "or 'uv'",
            "pip",
            choices=("pip", "uv"),
        ),
        Flag(
            "--prepare-envs",
            "build these node types' environments before listening (repeatable; 'all': every "
            "node type that declares one)",
            [],
            kind="list",
            metavar="NODE_TYPE",
        ),
        Flag(
            "--log-format",
            "log lines on standard error: 'text', or 'json' (one object a line, with each "
            "session's and turn's fields, for a log collector)",
            "text",
            choices=LOG_FORMATS,
        ),
        Flag(
            "--log-level",
            "the least severe log lines shown ('info': one line per session end and per turn)",
            "info",
            choices=LOG_LEVELS,
        ),
        Flag(
            "--strict-params",
            "refuse manifests with params their node type does not declare (default: ignore "
            "them with a warning, as the original runtime did)",
            False,
            kind="switch",
        ),
    )


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` flags; each is also read from its environment variable.

    Flags left out parse as None: :func:`config_from_args` takes the environment,
    then the default, for them.
    """
    for flag in serve_flags():
        shown = "" if _unset(flag.default) else f"; default {_show(flag.default)}"
        text = f"{flag.help} (env {flag.env}{shown})"
        if flag.kind == "switch":
            parser.add_argument(flag.name, action="store_true", default=None, help=text)
        elif flag.kind == "list":
            parser.add_argument(flag.name, action="append", metavar=flag.metavar, help=text)
        else:
            parser.add_argument(
                flag.name, type=flag.type, choices=flag.choices, metavar=flag.metavar, help=text
            )
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)


def _unset(value: Any) -> bool:
    return value is None or value is False or value == []


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def resolve_flags(args: argparse.Namespace, env: Mapping[str, str]) -> dict[str, Any]:
    """Every ``serve`` flag's value: the command line's, else its variable's, else the default.

    Raises:
        ConfigError: An environment variable holds no valid value.
    """
    values = {}
    for flag in serve_flags():
        given = getattr(args, flag.dest, None)
        if given is not None:
            values[flag.dest] = given
        elif flag.env in env:
            values[flag.dest] = flag.from_env(env[flag.env])
        else:
            values[flag.dest] = flag.default
    return values


def config_from_args(args: argparse.Namespace, env: Mapping[str, str]) -> ServerConfig:
    """Build the server configuration from flags, environment variables and defaults."""
    flags = resolve_flags(args, env)
    # GRPC_AUTH_TOKENS (read below with GRPC_REQUIRE_AUTH) adds to --auth-token.
    tokens = tuple(getattr(args, "auth_token", None) or ())
    auth = auth_from_env(env, tokens)
    if flags["health_requires_auth"]:
        auth = type(auth)(tokens=auth.tokens, required=auth.required, exempt_health=False)
    limits = Limits(
        max_sessions=flags["max_sessions"],
        max_nodes=flags["max_nodes"],
        max_message_bytes=int(flags["max_message_mb"] * MIB),
        max_chunk_samples=flags["max_chunk_samples"],
        idle_timeout=flags["idle_timeout"],
        max_duration=flags["max_duration"],
        init_timeout=flags["init_timeout"],
        max_session_buffer_bytes=int(flags["max_session_buffer_mb"] * MIB),
        max_connections=flags["max_connections"],
        handshake_timeout=flags["handshake_timeout"],
        keepalive_interval=flags["keepalive_interval"],
        keepalive_timeout=flags["keepalive_timeout"],
        strict_params=flags["strict_params"],
    )
    return ServerConfig(
        bind=flags["bind"],
        auth=auth,
        limits=limits,
        metrics_port=flags["metrics_port"],
        metrics_host=flags["metrics_host"],
        drain_timeout=flags["drain_timeout"],
        drain_delay=flags["drain_delay"],
        allow_client_paths=flags["allow_client_paths"],
        executors=_executors(flags["executor"]),
        workers=WorkerConfig(**{field: flags[f"worker_{field}"] for field in _WORKER_FLAGS}),
        reuse_port=args.reuse_port,
        transport=flags["transport"],
        web_port=flags["web_port"],
        web_allowed_origins=tuple(flags["web_allowed_origins"]),
        web_allowed_hosts=tuple(flags["web_allowed_hosts"]),
        webrtc=WebRtcConfig(
            mode=flags["webrtc"],
            ice_servers=tuple(IceServer.parse(url) for url in flags["webrtc_ice_server"]),
            host_addresses=tuple(flags["webrtc_host_address"]),
        ),
        env_dir=flags["env_dir"],
        env_installer=flags["env_installer"],
        node_config=load_node_config(flags["node_config"]),
        prepare_envs=tuple(flags["prepare_envs"]),
    )


def load_node_config(path: str | None) -> dict[str, NodeDefaults]:
    """Read ``--node-config`` (YAML or JSON); no file: no settings.

    Raises:
        ConfigError: The file cannot be read or parsed, or says something wrong (the
            message names the file and the place).
    """
    if not path:
        return {}
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(
            f"--node-config {path}: cannot read it ({exc.strerror or exc})."
        ) from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--node-config {path} is not valid YAML: {exc}") from None
    return node_config_from_dict(document or {}, path)


def process_count(value: str) -> int:
    """``--processes``: a positive count, or ``auto`` for the cores this process may use.

    Raises:
        ConfigError: Neither.
    """
    if value == "auto":
        return len(os.sched_getaffinity(0))
    if value.isdigit() and int(value) >= 1:
        return int(value)
    raise ConfigError(f"--processes {value!r} must be a positive number or 'auto'.")


def _executors(values: list[str]) -> dict[str, str]:
    chosen = {}
    for value in values:
        node_type, sep, where = value.partition("=")
        if not sep or where not in ("inprocess", "process") or not node_type:
            raise ConfigError(
                f"--executor {value!r} must look like NODE_TYPE=inprocess or NODE_TYPE=process."
            )
        chosen[node_type] = where
    return chosen


async def run_server(config: ServerConfig) -> None:
    """Serve until SIGINT or SIGTERM, then drain and return."""
    # Model batches run in worker threads that must take the GIL back to deliver
    # their results; with the default 5 ms switch interval a busy Trio thread makes
    # them wait up to 5 ms each. A shorter interval trades a little throughput for
    # chunk latency (see BENCHMARKS.md). Process-wide, so set here, not on import.
    sys.setswitchinterval(SWITCH_INTERVAL)
    # What is loaded by now lives as long as the process: full collections, which run
    # after sessions end (service/reclaim.py), skip it.
    if config.prepare_envs:
        await prepare_environments(config, config.prepare_envs)
    gc.collect()
    gc.freeze()
    shutdown = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def serve(task_status: trio.TaskStatus[ServerAddress]) -> None:
                await serving.serve(config, shutdown, task_status=task_status)
                nursery.cancel_scope.cancel()  # drained: stop waiting for signals

            address = await nursery.start(serve)
            metrics = (
                f", metrics at http://{config.metrics_host}:{address.metrics_port}/metrics"
                if address.metrics_port is not None
                else ""
            )
            if address.web_port is not None:  # before the metrics, which end the list
                page = f", browser page at http://{address.host}:{address.web_port}/"
                page += " (WebRTC and WebSocket)" if address.webrtc else " (WebSocket)"
                metrics = page + metrics
            auth = "token auth on" if config.auth.required else "no auth"
            print(
                f"remotemedia serve: listening on {address.host}:{address.port} "
                f"(gRPC remotemedia.v1 on the {config.transport} transport, {auth}{metrics}; "
                f"pid {os.getpid()})",
                flush=True,
            )
            async for signum in signals:
                name = signal.Signals(signum).name
                if shutdown.is_set():
                    say(f"remotemedia serve: {name} again: stopping now")
                    nursery.cancel_scope.cancel()
                    break
                delay = (
                    f"NOT_SERVING, new sessions taken for {config.drain_delay:g} s more, then "
                    if config.drain_delay
                    else ""
                )
                say(
                    f"remotemedia serve: {name}: draining ({delay}at most "
                    f"{config.drain_timeout:g} s; signal again to stop at once)"
                )
                shutdown.set()
