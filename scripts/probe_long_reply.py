"""Probe `remotemedia serve` with one long `converse` turn beside real-time VAD sessions.

Issue item 4 ("A long reply eats the server"): one `converse` session sends one Text of
``--chars`` characters of English words without punctuation to its coordinator (the
loopback responder says it all back) while ``--sessions`` real-time VAD sessions
stream speech.wav through the bundled `vad` pipeline (loadtest's own client and
numbers). Measured, against a real server process:

- the VAD sessions' chunk round trip, p50 / p95 / p99 (a chunk's send to its result);
- the resident memory of the server process, and the sum over its descendants (the
  worker processes), sampled every 100 ms: peaks, and what is left at the end;
- what the converse session got: its input refused, its reply truncated, reply audio.

Run it once with ``--chars 0`` for the baseline. By default the converse session keeps
listening (the reply is paced in real time); ``--close`` ends its input at once, so
the whole reply is synthesised as fast as it can be, the worst case. ``--param`` sets a
coordinator param (``--param max_turn_chars=200003`` lets the long text through, so
that its reply is what is measured); ``--serve`` passes a flag to `serve`. The load's
client runs on the same machine: near its capacity (about 20 such sessions on 2
cores) the p99 swings between runs, so interleave runs and compare medians.

    python3 scripts/probe_long_reply.py [--sessions 20] [--duration 40] [--chars 200000]
        [--param NAME=VALUE ...] [--serve=--worker-max-rss-mb=1024] [--close]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import trio
import yaml

from remotemedia import Audio, Json, Text
from remotemedia.cli.loadtest import LoadOptions, LoadStats, run_load
from remotemedia.client import ServerError, open_trio_client
from remotemedia.examples import example_path
from remotemedia.wav import read_wav

SPEECH = Path(__file__).parents[1] / "src" / "remotemedia" / "data" / "speech.wav"
SAMPLE_S = 0.1


@attrs.define
class Memory:
    """Resident memory of the server and of its descendants, sampled until stopped."""

    server_pid: int
    server_peak_mb: float = 0.0
    workers_peak_mb: float = 0.0
    total_peak_mb: float = 0.0
    server_mb: float = 0.0
    workers_mb: float = 0.0
    samples: int = 0
    stop: threading.Event = attrs.Factory(threading.Event)

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_S):
            server = _rss_mb(self.server_pid)
            workers = sum(_rss_mb(pid) for pid in _descendants(self.server_pid))
            self.server_mb, self.workers_mb = server, workers
            self.server_peak_mb = max(self.server_peak_mb, server)
            self.workers_peak_mb = max(self.workers_peak_mb, workers)
            self.total_peak_mb = max(self.total_peak_mb, server + workers)
            self.samples += 1


@attrs.define
class Converse:
    """What the converse session received after the long text went out."""

    sent_at: float | None = None
    first_audio_s: float | None = None
    audio_s: float = 0.0
    notes: list[str] = attrs.Factory(list)


def _rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0  # exited meanwhile
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(match.group(1)) / 1024 if match else 0.0


def _descendants(root: int) -> list[int]:
    # Each thread's `children` file lists the processes it started: cheap enough to read
    # every 100 ms (a scan of /proc would cost the load's client its CPU).
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # exited meanwhile
        for thread in threads:
            try:
                children = Path(f"/proc/{pid}/task/{thread}/children").read_text().split()
            except OSError:
                continue
            found += [int(child) for child in children]
            todo += [int(child) for child in children]
    return found


def _start_server(flags: list[str]) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "remotemedia", "serve", "--bind", "127.0.0.1:0", *flags]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    line = server.stdout.readline()
    match = re.search(r"listening on (\S+):(\d+)", line)
    assert match, f"unexpected first line from the server: {line!r}"
    return server, f"{match.group(1)}:{match.group(2)}"


def _converse_manifest(params: dict[str, Any]) -> dict[str, Any]:
    path = example_path("converse")
    assert path is not None
    manifest: dict[str, Any] = yaml.safe_load(path.read_text())
    for node in manifest["nodes"]:
        if node["id"] == "coordinator":
            node.setdefault("params", {}).update(params)
    return manifest


PROSE = (
    "and then the story goes on without a single stop because nobody ever told it where "
    "to end so it keeps walking through the town past the river and over the hill while "
    "the people who listen wonder when they may finally speak again"
)


def _long_text(chars: int) -> str:
    """English words without any punctuation, ``chars`` characters of them."""
    words = PROSE.split()
    text = " ".join(words[i % len(words)] for i in range(chars // 3))
    return text[:chars].rsplit(" ", 1)[0] if len(text) > chars else text


async def _listen(stream: Any, converse: Converse) -> None:
    try:
        await _take(stream, converse)
    except ServerError as error:  # e.g. the reply outlasted the drain after --close
        converse.notes.append(f"session ended: {error}")


async def _take(stream: Any, converse: Converse) -> None:
    async for result in stream:
        if converse.sent_at is None:
            continue
        if result.error is not None:
            converse.notes.append(f"input {result.sequence} refused: {result.error}")
            continue
        data = result.data
        if isinstance(data, Audio):
            converse.audio_s += data.duration
            if converse.first_audio_s is None:
                converse.first_audio_s = trio.current_time() - converse.sent_at
        elif isinstance(data, Json) and isinstance(data.value, dict):
            value = data.value
            if value.get("truncated") or "turn_done" in value or "error" in value:
                converse.notes.append(json.dumps(value)[:200])


async def _probe(
    address: str, options: argparse.Namespace, converse: Converse
) -> tuple[LoadStats, float]:
    params = dict(_parse(item) for item in options.param)
    load = LoadOptions(
        server=address,
        manifest="vad",
        audio=read_wav(SPEECH),
        sessions=options.sessions,
        ramp=2.0,
        duration=options.duration,
    )
    async with (
        open_trio_client(address) as client,
        client.stream(_converse_manifest(params)) as stream,
    ):
        started = trio.current_time()
        ready = started  # the converse session is open: its models are loaded
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_listen, stream, converse)

            async def speak_at_length() -> None:
                await trio.sleep(options.text_at)
                if options.chars:
                    converse.sent_at = trio.current_time()
                    text = _long_text(options.chars)
                    await stream.send(Text(text), node_id="coordinator")
                    if options.close:
                        await stream.close()

            nursery.start_soon(speak_at_length)
            stats = await run_load(load)
            nursery.cancel_scope.cancel()
    return stats, ready - started


def _parse(item: str) -> tuple[str, Any]:
    name, _, text = item.partition("=")
    return name, yaml.safe_load(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument("--chars", type=int, default=200_000)
    parser.add_argument("--text-at", type=float, default=5.0, help="seconds into the load")
    parser.add_argument("--param", action="append", default=[], help="coordinator NAME=VALUE")
    parser.add_argument("--serve", action="append", default=[], help="a flag for `serve`")
    parser.add_argument("--close", action="store_true", help="end the converse input at once")
    options = parser.parse_args()

    server, address = _start_server(options.serve)
    memory = Memory(server.pid)
    sampler = threading.Thread(target=memory.run, daemon=True)
    sampler.start()
    converse = Converse()
    try:
        stats, _ = trio.run(_probe, address, options, converse)
        time.sleep(2.0)  # sessions over: what stays
        left_server, left_workers = memory.server_mb, memory.workers_mb
    finally:
        memory.stop.set()
        server.terminate()
        server.wait(timeout=30)
    print(
        f"--- {options.sessions} VAD sessions, {options.duration:g} s; converse text "
        f"{options.chars:,} characters at {options.text_at:g} s "
        f"({'input ended at once' if options.close else 'listening'}); "
        f"params {options.param or 'default'}; serve {options.serve or 'default'}"
    )
    print(stats.table())
    print(
        f"server RSS peak {memory.server_peak_mb:.0f} MB, workers (sum) peak "
        f"{memory.workers_peak_mb:.0f} MB, together peak {memory.total_peak_mb:.0f} MB "
        f"({memory.samples} samples every {SAMPLE_S * 1000:.0f} ms)"
    )
    print(f"after the sessions: server {left_server:.0f} MB, workers {left_workers:.0f} MB")
    if options.chars:
        first = "none" if converse.first_audio_s is None else f"{converse.first_audio_s:.2f} s"
        print(f"converse: reply audio {converse.audio_s:.1f} s received, first after {first}")
        for note in converse.notes:
            print(f"converse: {note}")


if __name__ == "__main__":
    main()
