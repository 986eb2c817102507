"""``remotemedia serve``: the gRPC server, with graceful drain on SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Mapping

import trio

from remotemedia.config import (
    TRANSPORTS,
    ConfigError,
    Limits,
    ServerConfig,
    WorkerConfig,
    auth_from_env,
)
from remotemedia.transport import serving
from remotemedia.transport.serving import ServerAddress

__all__ = ["add_serve_arguments", "config_from_args", "process_count", "run_server"]

MIB = 1024 * 1024
SWITCH_INTERVAL = 0.0005


_WORKER_FLAGS = {  # WorkerConfig field -> help; the flag is --worker-<field>
    "call_timeout": "seconds a worker may spend on one input without output before it is replaced",
    "start_timeout": "seconds a worker may take to load its model",
    "stop_grace": "seconds a stopping worker gets before SIGTERM, then before SIGKILL",
    "max_rss_mb": "replace a worker between inputs above this resident memory in MiB; 0: never",
}


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` flags (each limit has a flag; defaults are the Limits defaults)."""
    defaults = Limits()
    parser.add_argument(
        "--bind",
        help="host:port to listen on (env GRPC_BIND_ADDRESS; default 127.0.0.1:50051; "
        "port 0 picks one)",
    )
    parser.add_argument(
        "--auth-token",
        action="append",
        default=[],
        metavar="TOKEN",
        help="accept this bearer token (repeatable; env GRPC_AUTH_TOKENS, comma-separated)",
    )
    parser.add_argument(
        "--health-requires-auth",
        action="store_true",
        help="also require a token for the grpc.health.v1 service",
    )
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    parser.add_argument("--metrics-host", default="127.0.0.1", help="interface for /metrics")
    parser.add_argument("--max-sessions", type=int, default=defaults.max_sessions)
    parser.add_argument("--max-nodes", type=int, default=defaults.max_nodes)
    parser.add_argument(
        "--max-message-mb",
        type=float,
        default=defaults.max_message_bytes / MIB,
        help="largest gRPC message, MiB (default 10)",
    )
    parser.add_argument("--max-chunk-samples", type=int, default=defaults.max_chunk_samples)
    parser.add_argument(
        "--max-session-buffer-mb",
        type=float,
        default=defaults.max_session_buffer_bytes / MIB,
        help="bytes one session may hold queued, MiB; senders wait beyond it (default 32)",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=defaults.max_connections,
        help="client connections open at once; more get GOAWAY (default 1000)",
    )
    parser.add_argument(
        "--handshake-timeout",
        type=float,
        default=defaults.handshake_timeout,
        help="seconds a new connection may take to send its first request (default 10)",
    )
    parser.add_argument(
        "--keepalive-interval",
        type=float,
        default=defaults.keepalive_interval,
        help="seconds a connection may be silent before it is pinged (native transport; "
        f"default {defaults.keepalive_interval:g})",
    )
    parser.add_argument(
        "--keepalive-timeout",
        type=float,
        default=defaults.keepalive_timeout,
        help="seconds a pinged connection has to answer before it is closed (native "
        f"transport; default {defaults.keepalive_timeout:g})",
    )
    parser.add_argument("--idle-timeout", type=float, default=defaults.idle_timeout, help="seconds")
    parser.add_argument("--max-duration", type=float, default=defaults.max_duration, help="seconds")
    parser.add_argument("--init-timeout", type=float, default=defaults.init_timeout, help="seconds")
    parser.add_argument(
        "--drain-timeout", type=float, default=10.0, help="seconds live sessions get on shutdown"
    )
    parser.add_argument(
        "--executor",
        action="append",
        default=[],
        metavar="NODE_TYPE=WHERE",
        help="run a node type 'inprocess' or in a worker 'process' (repeatable)",
    )
    workers = WorkerConfig()
    for field, help_text in _WORKER_FLAGS.items():
        parser.add_argument(
            f"--worker-{field.replace('_', '-')}",
            type=float,
            default=getattr(workers, field),
            help=f"{help_text} (default {getattr(workers, field):g})",
        )
    parser.add_argument(
        "--allow-client-paths",
        action="store_true",
        help="let clients set params that name files on this machine (such as model_path)",
    )
    parser.add_argument(
        "--processes",
        default="1",
        help="server processes sharing the port (SO_REUSEPORT), each with its own limits "
        "and workers; 'auto': one per core this process may use (default 1)",
    )
    parser.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--transport",
        choices=TRANSPORTS,
        help=f"the gRPC server: 'native' (HTTP/2 on Trio) or 'grpclib' (grpclib on asyncio "
        f"in trio-asyncio) (env REMOTEMEDIA_TRANSPORT; default {ServerConfig().transport})",
    )
    parser.add_argument(
        "--strict-params",
        action="store_true",
        help="refuse manifests with params their node type does not declare (default: "
        "ignore them with a warning, as the original runtime did)",
    )


def config_from_args(args: argparse.Namespace, env: Mapping[str, str]) -> ServerConfig:
    """Build the server configuration from flags and the original's environment variables."""
    auth = auth_from_env(env, tuple(args.auth_token))
    if args.health_requires_auth:
        auth = type(auth)(tokens=auth.tokens, required=auth.required, exempt_health=False)
    limits = Limits(
        max_sessions=args.max_sessions,
        max_nodes=args.max_nodes,
        max_message_bytes=int(args.max_message_mb * MIB),
        max_chunk_samples=args.max_chunk_samples,
        idle_timeout=args.idle_timeout,
        max_duration=args.max_duration,
        init_timeout=args.init_timeout,
        max_session_buffer_bytes=int(args.max_session_buffer_mb * MIB),
        max_connections=args.max_connections,
        handshake_timeout=args.handshake_timeout,
        keepalive_interval=args.keepalive_interval,
        keepalive_timeout=args.keepalive_timeout,
        strict_params=args.strict_params,
    )
    return ServerConfig(
        bind=args.bind or env.get("GRPC_BIND_ADDRESS") or "127.0.0.1:50051",
        auth=auth,
        limits=limits,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        drain_timeout=args.drain_timeout,
        allow_client_paths=args.allow_client_paths,
        executors=_executors(args.executor),
        workers=WorkerConfig(
            **{field: getattr(args, f"worker_{field}") for field in _WORKER_FLAGS}
        ),
        reuse_port=args.reuse_port,
        transport=args.transport or env.get("REMOTEMEDIA_TRANSPORT") or ServerConfig().transport,
    )


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
                    print(f"remotemedia serve: {name} again: stopping now", file=sys.stderr)
                    nursery.cancel_scope.cancel()
                    break
                print(
                    f"remotemedia serve: {name}: draining (at most {config.drain_timeout:g} s; "
                    "signal again to stop at once)",
                    file=sys.stderr,
                    flush=True,
                )
                shutdown.set()
