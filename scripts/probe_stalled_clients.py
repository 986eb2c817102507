"""Probe `remotemedia serve` with clients that never read, as a careless client would.

Measures, against a real server process with grpcio clients (threads, one process):

1. isolation: one stream on a connection floods 1 MiB chunks and never reads; how long
   a second, normal stream on the same connection takes;
2. stalled clients: rounds of clients that flood and never read against
   `--max-sessions 2 --idle-timeout 3 --max-duration 6`; per round, how long until a
   new session is admitted, whether every stuck call ended, and the server's RSS.

    python3 scripts/probe_stalled_clients.py [--rounds 5] [--clients 4]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import execution_pb2 as epb
from remotemedia.v1 import streaming_pb2 as spb

METHOD = "/remotemedia.v1.StreamingPipelineService/StreamPipeline"
CHUNK = 1 << 20


def _manifest() -> epb.PipelineManifest:
    wire = epb.PipelineManifest(version="v1", metadata=epb.ManifestMetadata(name="probe"))
    wire.nodes.add(id="pass", node_type="PassThrough", params="{}")
    return wire


def _init() -> spb.StreamRequest:
    return spb.StreamRequest(init=spb.StreamInit(client_version="v1", manifest=_manifest()))


def _chunk(sequence: int, size: int) -> spb.StreamRequest:
    buffer = pb.DataBuffer(binary=pb.BinaryBuffer(data=bytes(size)))
    return spb.StreamRequest(
        data_chunk=spb.DataChunk(node_id="pass", buffer=buffer, sequence=sequence)
    )


def _flood(stop: threading.Event) -> Iterator[spb.StreamRequest]:
    yield _init()
    sequence = 0
    while not stop.is_set():
        yield _chunk(sequence, CHUNK)
        sequence += 1


def _normal() -> Iterator[spb.StreamRequest]:
    yield _init()
    yield _chunk(0, 1000)
    yield spb.StreamRequest(control=spb.StreamControl(command=spb.StreamControl.COMMAND_CLOSE))


def _call(channel: grpc.Channel, requests: Iterator[spb.StreamRequest]) -> object:
    stub = channel.stream_stream(
        METHOD,
        request_serializer=spb.StreamRequest.SerializeToString,
        response_deserializer=spb.StreamResponse.FromString,
    )
    return stub(requests)


def _normal_session(channel: grpc.Channel, timeout: float) -> bool:
    """A short session to the end; True if it got `closed` with status OK."""
    try:
        responses = list(_call(channel, _normal()))  # type: ignore[call-overload]
    except grpc.RpcError:
        return False
    return bool(responses) and responses[-1].WhichOneof("response") == "closed"


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    """The process's resident memory now (``VmHWM``: its peak so far), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(field + r":\s+(\d+) kB", status)
    assert match
    return int(match.group(1)) / 1024


def _start_server(*flags: str) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "remotemedia", "serve", "--bind", "127.0.0.1:0", *flags]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = server.stdout.readline()
    match = re.search(r"listening on (\S+):(\d+)", line)
    assert match, line
    return server, f"{match.group(1)}:{match.group(2)}"


def probe_isolation(address: str) -> float:
    stop = threading.Event()
    with grpc.insecure_channel(address) as channel:
        flood = _call(channel, _flood(stop))
        time.sleep(2.0)  # let it fill every buffer it can
        started = time.perf_counter()
        ok = _normal_session(channel, 10)
        elapsed = time.perf_counter() - started
        stop.set()
        flood.cancel()  # type: ignore[attr-defined]
    assert ok, "the second stream on the connection did not complete"
    return elapsed


def probe_round(address: str, clients: int) -> tuple[float, float, bool]:
    """One round; (seconds until a new session was admitted, until every stuck call ended,
    whether all ended)."""
    stop = threading.Event()
    channels = [grpc.insecure_channel(address) for _ in range(clients)]
    calls = [_call(channel, _flood(stop)) for channel in channels]
    time.sleep(0.5)  # the clients have started flooding
    started = time.perf_counter()
    with grpc.insecure_channel(address) as channel:
        while not _normal_session(channel, 10):
            time.sleep(0.1)
    admitted = time.perf_counter() - started
    while not all(call.done() for call in calls):  # type: ignore[attr-defined]
        if time.perf_counter() - started > 60:
            break
        time.sleep(0.1)
    ended = time.perf_counter() - started
    all_ended = all(call.done() for call in calls)  # type: ignore[attr-defined]
    stop.set()
    for call in calls:
        call.cancel()  # type: ignore[attr-defined]
    for channel in channels:
        channel.close()
    return admitted, ended, all_ended


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--transport", default="native", choices=("native", "grpclib"))
    options = parser.parse_args()
    transport = ("--transport", options.transport)

    server, address = _start_server(*transport)
    try:
        times = [probe_isolation(address) for _ in range(3)]
        print(
            f"isolation: a second stream beside a never-reading 1 MiB flood on one "
            f"connection completed in {statistics.median(times) * 1000:.0f} ms (median of 3)"
        )
    finally:
        server.terminate()
        server.wait()

    flags = ("--max-sessions", "2", "--idle-timeout", "3", "--max-duration", "6")
    server, address = _start_server(*flags, *transport)
    try:
        print(
            f"stalled clients ({options.transport} transport): {' '.join(flags)}, "
            f"{options.clients} never-reading clients"
        )
        print(f"  start RSS {_rss_mb(server.pid):.0f} MiB")
        for round_ in range(1, options.rounds + 1):
            admitted, ended, all_ended = probe_round(address, options.clients)
            at_end = _rss_mb(server.pid)
            time.sleep(1.5)  # the server collects what ended sessions left, within 1 s
            print(
                f"  round {round_}: new session admitted after {admitted:.1f} s, every stuck "
                f"call ended after {ended:.1f} s ({'all' if all_ended else 'NOT all'}), "
                f"server RSS {at_end:.0f} MiB at its end, {_rss_mb(server.pid):.0f} MiB "
                f"1.5 s later, peak so far {_rss_mb(server.pid, 'VmHWM'):.0f} MiB"
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
