"""Entry point of the ``remotemedia`` command."""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from remotemedia.cli.envs import build_environments, list_environments
from remotemedia.cli.processes import follow_parent, run_processes
from remotemedia.cli.run import RunOptions, describe, result_record, run_file
from remotemedia.cli.say import say_as_logs
from remotemedia.cli.serve import (
    add_serve_arguments,
    config_from_args,
    load_node_config,
    process_count,
    resolve_flags,
    run_server,
)
from remotemedia.cli.stream import stream_file
from remotemedia.cli.top import run_top
from remotemedia.config import ServerConfig
from remotemedia.environments.cache import default_env_dir
from remotemedia.errors import RemoteMediaError
from remotemedia.media import Audio
from remotemedia.nodes import default_registry
from remotemedia.observability.logs import configure_logging
from remotemedia.pipeline import check_pipeline
from remotemedia.service.compose import environments
from remotemedia.session import Result
from remotemedia.wav import read_wav

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # `serve --processes` hands its flags on to each server process
    try:
        status: int = args.handler(args)
        return status
    except RemoteMediaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:
        # Trio nurseries wrap errors in groups; show the user-facing one plainly.
        errors, _ = group.split(RemoteMediaError)
        if errors is None:
            raise
        first = _first_leaf(errors)
        print(f"error: {first}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`remotemedia nodes | head`): stop quietly, and keep
        # Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _first_leaf(group: BaseException) -> BaseException:
    while isinstance(group, BaseExceptionGroup):
        group = group.exceptions[0]
    return group


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="remotemedia",
        description="Run real-time media pipelines (resample, VAD, chunking, ...).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser(
        "validate", help="check a pipeline manifest and list every problem"
    )
    validate.add_argument("manifest", help="manifest file (YAML or JSON) or bundled example name")
    validate.set_defaults(handler=_validate)

    nodes = commands.add_parser("nodes", help="list node types with their params")
    nodes.add_argument("--json", action="store_true", help="print JSON instead of text")
    nodes.set_defaults(handler=_nodes)

    run = commands.add_parser("run", help="stream a WAV file through a pipeline")
    run.add_argument("manifest", help="manifest file (YAML or JSON) or bundled example name")
    run.add_argument("--input", "-i", required=True, type=Path, help="WAV file to stream")
    run.add_argument("--jsonl", action="store_true", help="print every result as a JSON line")
    run.add_argument("--all", action="store_true", help="also show routine results (text mode)")
    run.add_argument(
        "--chunk-ms", type=float, default=20.0, help="chunk duration in ms (default 20)"
    )
    run.add_argument("--realtime", action="store_true", help="pace chunks in real time")
    run.add_argument("--node", dest="node_id", help="send chunks to this node id")
    run.set_defaults(handler=_run)

    serve = commands.add_parser("serve", help="serve pipelines over gRPC (remotemedia.v1)")
    add_serve_arguments(serve)
    serve.set_defaults(handler=_serve)

    stream = commands.add_parser("stream", help="stream a WAV file through a pipeline on a server")
    stream.add_argument("manifest", help="manifest file (YAML or JSON) or bundled example name")
    stream.add_argument("--input", "-i", required=True, type=Path, help="WAV file to stream")
    stream.add_argument("--server", default="127.0.0.1:50051", help="host:port of the server")
    stream.add_argument("--token", help="bearer token for the server")
    stream.add_argument("--jsonl", action="store_true", help="print every result as a JSON line")
    stream.add_argument("--all", action="store_true", help="also show routine results (text mode)")
    stream.add_argument("--chunk-ms", type=float, default=20.0, help="chunk duration in ms")
    stream.add_argument("--realtime", action="store_true", help="pace chunks in real time")
    stream.add_argument("--node", dest="node_id", help="send chunks to this node id")
    stream.set_defaults(handler=_stream)

    demo = commands.add_parser(
        "demo",
        help="speak sentences with Piper, serve, stream them over gRPC through Whisper; "
        "print transcripts with latency and word error rate",
    )
    demo.add_argument("--fast", action="store_true", help="stream as fast as possible")
    demo.add_argument(
        "--converse",
        action="store_true",
        help="instead: a scripted user talks to the 'converse' pipeline and interrupts its "
        "reply; print the timeline",
    )
    demo.set_defaults(handler=_demo)

    envs = commands.add_parser(
        "envs",
        help="build, list or remove the Python environments of model nodes",
        description="Model nodes run in worker processes with Python environments of their "
        "own, built on first use in --env-dir. Build them ahead of time here (or with "
        "`serve --prepare-envs`), see what is there, and remove what is no longer needed.",
    )
    actions = envs.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser("build", help="build node types' environments (default: all)")
    build.add_argument("node_types", nargs="*", metavar="NODE_TYPE")
    for parser_ in (build, actions.add_parser("list", help="list the built environments")):
        parser_.add_argument("--env-dir", help=f"the cache folder (default {default_env_dir()})")
    build.add_argument("--node-config", help="per-node-type settings (as serve's)")
    build.add_argument("--env-installer", choices=("pip", "uv"), default="pip")
    remove = actions.add_parser("remove", help="delete environments by name")
    remove.add_argument("keys", nargs="*", metavar="NAME", help="as `envs list` shows them")
    remove.add_argument("--all", action="store_true", help="every environment")
    remove.add_argument("--env-dir", help=f"the cache folder (default {default_env_dir()})")
    envs.set_defaults(handler=_envs)

    top = commands.add_parser(
        "top",
        help="a live view of a server's sessions: pipelines, queues, workers, turn latency",
        description="Show a running server's live sessions, redrawn in place: each with its "
        "pipeline, age, chunks in and out, its nodes' queues and worker processes, and its "
        "last turns' latency by stage. Reads /v1/sessions on the server's --metrics-port.",
    )
    top.add_argument("address", help="host:port of the server's --metrics-port")
    top.add_argument("--once", action="store_true", help="print one table and exit (scripts)")
    top.add_argument("--json", action="store_true", help="print the sessions as JSON and exit")
    top.add_argument(
        "--interval", type=float, default=1.0, help="seconds between refreshes (default 1)"
    )
    top.set_defaults(handler=_top)

    load = commands.add_parser(
        "loadtest",
        help="run many streaming sessions against a server or balancer; report latency",
        description="Run many streaming sessions against a server or a load balancer and "
        "report sessions ok/failed, chunk latency percentiles, results per second, errors "
        "by type and the spread over server processes. --find-capacity searches for the "
        "most sessions whose chunk p99 stays within --p99-ms.",
    )
    load.add_argument("--server", default="127.0.0.1:50051", help="host:port to load")
    load.add_argument(
        "--manifest", default="vad", help="bundled example name or manifest file (default vad)"
    )
    load.add_argument(
        "--input", "-i", type=Path, help="WAV file each session streams (default: bundled speech)"
    )
    load.add_argument("--sessions", type=int, default=10, help="sessions at once (default 10)")
    load.add_argument("--ramp", type=float, default=0.0, help="seconds to start them over")
    load.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="seconds each session streams, the audio looped (default: the audio once)",
    )
    load.add_argument("--realtime", action="store_true", help="pace chunks in real time")
    load.add_argument("--chunk-ms", type=float, default=20.0, help="chunk length (default 20)")
    load.add_argument("--token", help="bearer token for the server")
    load.add_argument(
        "--connections",
        type=int,
        default=0,
        help="client connections the sessions share (default: one per session)",
    )
    load.add_argument(
        "--find-capacity",
        action="store_true",
        help="search for the largest --sessions with chunk p99 <= --p99-ms and no failure "
        "(starting from --sessions; use with --realtime and --duration)",
    )
    load.add_argument("--p99-ms", type=float, default=50.0, help="capacity bound (default 50)")
    load.add_argument(
        "--max-sessions", type=int, default=1000, help="largest count the search tries"
    )
    load.set_defaults(handler=_loadtest)
    return parser


def _validate(args: argparse.Namespace) -> int:
    # Unknown params are warnings, not errors (the original ignored them): list them
    # on stderr, but the manifest runs, so the exit status stays 0.
    graph, warnings = check_pipeline(args.manifest)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    edges = sum(len(node.successors) for node in graph.nodes.values())
    nodes = f"{len(graph.nodes)} node{'s' if len(graph.nodes) != 1 else ''}"
    connections = f"{edges} connection{'s' if edges != 1 else ''}"
    print(
        f"{args.manifest}: valid ({nodes}, {connections}; "
        f"sources: {', '.join(graph.sources)}; sinks: {', '.join(graph.sinks)})."
    )
    return 0


def _nodes(args: argparse.Namespace) -> int:
    described = default_registry().describe()
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    for entry in described:
        accepts, produces = ", ".join(entry["accepts"]), ", ".join(entry["produces"])
        print(f"{entry['node_type']}: {entry['description']}")
        if entry["unavailable"]:
            print(f"  UNAVAILABLE here: {entry['unavailable']}")
        if entry["environment"]:
            print(f"  runs in a worker with its own environment: {entry['environment']}")
        print(f"  in: {accepts}  ->  out: {produces}")
        for p in entry["params"]:
            rng = f", {p['range']}" if p["range"] else ""
            print(f"  - {p['name']} ({p['type']}, default {p['default']!r}{rng}): {p['doc']}")
        print()
    return 0


def _options(args: argparse.Namespace) -> RunOptions:
    if not (math.isfinite(args.chunk_ms) and args.chunk_ms > 0):
        raise RemoteMediaError(f"--chunk-ms must be a positive number, got {args.chunk_ms}.")
    return RunOptions(chunk_ms=args.chunk_ms, realtime=args.realtime, node_id=args.node_id)


def _printer(args: argparse.Namespace) -> Callable[[Result], None]:
    def show(result: Result) -> None:
        if args.jsonl:
            print(json.dumps(result_record(result)), flush=True)
            return
        line = describe(result)
        if line is None and args.all:
            line = json.dumps(result_record(result))
        if line is not None:
            print(line, flush=True)

    return show


def _run(args: argparse.Namespace) -> int:
    audio = _read_input(args.input)
    summary = trio.run(run_file, args.manifest, audio, _options(args), _printer(args))
    print(summary.render(), file=sys.stderr)
    return 0


def _serve(args: argparse.Namespace) -> int:
    follow_parent(os.environ)  # first: a server process of `serve --processes` dies with it
    config = config_from_args(args, os.environ)
    flags = resolve_flags(args, os.environ)
    configure_logging(flags["log_format"], flags["log_level"])
    if flags["log_format"] == "json":
        say_as_logs()
    count = process_count(flags["processes"])
    if count > 1 and not args.reuse_port:
        host, port = config.host_port
        serve_flags = args.argv[args.argv.index("serve") + 1 :]
        status: int = trio.run(run_processes, count, host, port, config.metrics_port, serve_flags)
        return status
    trio.run(run_server, config)
    return 0


def _top(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        raise RemoteMediaError(f"--interval must be a positive number, got {args.interval}.")
    return run_top(args.address, once=args.once, as_json=args.json, interval=args.interval)


def _envs(args: argparse.Namespace) -> int:
    config = ServerConfig(
        env_dir=args.env_dir,
        env_installer=getattr(args, "env_installer", "pip"),
        node_config=load_node_config(getattr(args, "node_config", None)),
    )
    if args.action == "build":
        return build_environments(config, args.node_types)
    cache = environments(config)
    if args.action == "list":
        for line in list_environments(cache):
            print(line)
        return 0
    keys = [item.key for item in cache.installed()] if args.all else args.keys
    if not keys:
        raise RemoteMediaError("Name the environments to remove (`envs list`), or give --all.")
    for key in keys:
        cache.remove(key)
        print(f"removed {cache.root / key}")
    return 0


def _stream(args: argparse.Namespace) -> int:
    audio = _read_input(args.input)
    options = _options(args)
    summary = trio.run(
        functools.partial(
            stream_file,
            args.server,
            args.manifest,
            audio,
            options,
            _printer(args),
            token=args.token,
        )
    )
    print(summary, file=sys.stderr)
    return 0


def _read_input(path: Path) -> Audio:
    try:
        return read_wav(path)
    except OSError as exc:
        raise RemoteMediaError(f"Cannot read input file {path}: {exc.strerror or exc}.") from exc


def _loadtest(args: argparse.Namespace) -> int:
    from remotemedia.cli.loadtest import LoadOptions, LoadStats, find_capacity, run_load

    if args.sessions < 1 or args.connections < 0 or args.chunk_ms <= 0:
        raise RemoteMediaError(
            "--sessions must be 1 or more, --connections 0 or more, and --chunk-ms positive."
        )
    audio = _read_input(args.input or Path(__file__).parents[1] / "data" / "speech.wav")
    options = LoadOptions(
        server=args.server,
        manifest=args.manifest,
        audio=audio,
        sessions=args.sessions,
        ramp=args.ramp,
        duration=args.duration,
        realtime=args.realtime,
        chunk_ms=args.chunk_ms,
        token=args.token,
        connections=args.connections,
    )
    tty = sys.stderr.isatty()

    def show(stats: LoadStats) -> None:
        # On a terminal the line is redrawn each second; in a log, a line every 5 s.
        if tty:
            print(f"\r{stats.progress()}\x1b[K", end="", file=sys.stderr, flush=True)
        elif round(stats.seconds) % 5 == 0:
            print(stats.progress(), file=sys.stderr, flush=True)

    def done() -> None:
        if tty:
            print(file=sys.stderr)

    if args.find_capacity:
        capacity, runs = trio.run(
            functools.partial(
                find_capacity, options, args.p99_ms, limit=args.max_sessions, on_progress=show
            )
        )
        done()
        for count, stats in runs:
            print(f"--- {count} sessions\n{stats.table()}")
        print(f"capacity: {capacity} sessions with chunk p99 <= {args.p99_ms:g} ms")
        return 0 if capacity else 1
    stats = trio.run(functools.partial(run_load, options, on_progress=show))
    done()
    print(stats.table())
    return 0 if stats.failed == 0 else 1


def _demo(args: argparse.Namespace) -> int:
    if args.converse:
        from remotemedia.cli.converse import run_converse_demo

        return run_converse_demo()
    from remotemedia.cli.demo import run_demo

    return run_demo(realtime=not args.fast)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
