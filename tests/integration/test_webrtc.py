"""The WebRTC edge against a real `remotemedia serve`, with an in-process aiortc client.

Loopback only: the server offers 127.0.0.1 alone (``--webrtc-host-address``), no
ICE server is configured on either side, and the client offers loopback only, so
nothing leaves the machine. The microphone is real time (a track paced by the wall
clock), the codec real Opus both ways.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soxr
import trio

from remotemedia import Audio, Json
from remotemedia.client import open_trio_client
from remotemedia.config import ServerConfig, WebRtcConfig
from remotemedia.media import RuntimeData
from remotemedia.nodes import Node, builtin_registry
from remotemedia.testing import word_error_rate
from remotemedia.transport.serving import serve
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import execution_pb2 as epb
from remotemedia.v1 import streaming_pb2 as spb
from remotemedia.wav import read_wav

pytest.importorskip("aiortc", reason="needs remotemedia[webrtc]")

from tests.clients.webrtc import (
    Refused,
    RtcSession,
    close_session,
    open_session,
    post_offer,
    webrtc_loop,
)
from tests.processes import reap

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "src" / "remotemedia" / "data"
TOKEN = "rtc-token"


class _Server:
    def __init__(self, process: trio.Process, base: str, grpc: str) -> None:
        self.process = process
        self.base = base
        self.grpc = grpc


@contextlib.asynccontextmanager
async def _serve(*extra: str) -> AsyncIterator[_Server]:
    """`remotemedia serve` with the page and WebRTC on loopback; its web base URL."""
    command = [
        sys.executable,
        "-m",
        "remotemedia",
        "serve",
        "--bind",
        "127.0.0.1:0",
        "--web-port",
        "0",
        "--webrtc",
        "on",
        "--webrtc-host-address",
        "127.0.0.1",
        *extra,
    ]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    assert process.stderr is not None
    try:
        async with trio.open_nursery() as nursery:

            async def drain_stderr() -> None:  # (read, so the pipe never fills)
                assert process.stderr is not None
                while await process.stderr.receive_some(65536):
                    pass

            line = b""
            with trio.fail_after(60):
                while b"\n" not in line:
                    chunk = await process.stdout.receive_some(4096)
                    assert chunk, "the server exited before listening"
                    line += chunk
            page = re.search(r"browser page at (http://\S+?)/ \(WebRTC", line.decode())
            grpc = re.search(r"listening on (\S+:\d+)", line.decode())
            assert page, line
            assert grpc, line
            server = _Server(process, page[1], grpc[1])
            nursery.start_soon(drain_stderr)
            yield server
            nursery.cancel_scope.cancel()
    finally:
        await reap(process)


def _speech_48k() -> tuple[np.ndarray, str]:
    audio = read_wav(DATA / "speech.wav")
    samples = soxr.resample(audio.samples, audio.sample_rate, 48_000).astype(np.float32)
    sentences = [s["text"] for s in json.loads((DATA / "speech.json").read_text())["segments"]]
    return samples, " ".join(sentences)


def _texts(session_results: list[tuple[float, dict[str, object]]]) -> str:
    return " ".join(
        str(value["text"]).strip()
        for _, value in session_results
        if isinstance(value.get("text"), str) and not value.get("interim")
    )


async def test_speech_over_opus_is_transcribed_and_the_session_closes() -> None:
    samples, said = _speech_48k()
    async with _serve() as server, webrtc_loop(), trio.open_nursery() as nursery:
        with trio.fail_after(120):
            session = await open_session(
                server.base, pipeline="transcribe", microphone=samples, nursery=nursery
            )
            await session.until(lambda s: "ready" in s.kinds(), 30)
            answer = session.pc.remoteDescription.sdp
            # The server offered loopback only, and no relay or reflexive address.
            candidates = [line for line in answer.splitlines() if line.startswith("a=candidate")]
            assert candidates
            assert all(" 127.0.0.1 " in line and " typ host" in line for line in candidates)
            # The whole recording, in real time, then a little silence.
            seconds = samples.size / 48_000 + 1.5
            await trio.sleep(seconds)
            session.close()
            await session.until(lambda s: "closed" in s.kinds(), 30)
            heard = _texts(session.json_results())
            await close_session(session)
            nursery.cancel_scope.cancel()
    assert word_error_rate(said, heard) <= 0.15, heard
    kinds = session.kinds()
    assert kinds.index("ready") < kinds.index("closed")


async def test_spoken_text_comes_back_on_the_audio_track() -> None:
    text = "The quick brown fox jumps over the lazy dog."
    async with _serve() as server, webrtc_loop(), trio.open_nursery() as nursery:
        with trio.fail_after(120):
            session = await open_session(server.base, pipeline="speak", nursery=nursery)
            await session.until(lambda s: "ready" in s.kinds(), 60)
            session.send_text(text)
            session.close()
            await session.until(lambda s: "closed" in s.kinds(), 60)
            # The speech is played out in real time after its result went by; then
            # the track falls silent, and quiet.
            await session.until(lambda s: _loud(s.audio()).sum() >= 50, 30)
            await _quiet_for(session, 1.0)
            heard_audio = session.audio()
            await close_session(session)
            heard = await _transcribed(server.grpc, heard_audio)
            nursery.cancel_scope.cancel()
    # Nothing but the audio's own results went on the data channel.
    assert not any(
        b.WhichOneof("data_type") == "audio"
        for _, r in session.responses
        if r.WhichOneof("response") == "result"
        for b in r.result.data_outputs.values()
    )
    assert word_error_rate(text, heard) <= 0.15, heard


async def _transcribed(address: str, audio: np.ndarray) -> str:
    """What the server's own `transcribe` pipeline hears in ``audio`` (48 kHz), over gRPC."""
    padded = np.concatenate((np.zeros(9600, np.float32), audio, np.zeros(48_000, np.float32)))
    texts = []
    async with open_trio_client(address) as client, client.stream("transcribe") as stream:
        for start in range(0, padded.size, 960):
            await stream.send(Audio(padded[start : start + 960], 48_000))
        await stream.close()
        async for result in stream:
            if isinstance(result.data, Json) and isinstance(result.data.value.get("text"), str):
                texts.append(result.data.value["text"].strip())
    return " ".join(texts)


def _loud(audio: np.ndarray) -> np.ndarray:
    """Which 20 ms frames of ``audio`` (48 kHz) are louder than silence."""
    frames = audio[: audio.size - audio.size % 960].reshape(-1, 960)
    loud: np.ndarray = np.sqrt(np.mean(frames**2, axis=1)) > 0.01
    return loud


async def _quiet_for(session: RtcSession, seconds: float) -> None:
    """Wait until no loud frame has arrived on the track for ``seconds``."""
    while True:
        loud = _loud(session.audio()).sum()
        with trio.move_on_after(seconds) as waited:
            await session.until(lambda s, before=loud: _loud(s.audio()).sum() > before, seconds + 1)
        if waited.cancelled_caught:
            return


async def test_refusals_are_typed_http_errors_and_the_server_keeps_serving() -> None:
    bad = spb.StreamRequest(
        init=spb.StreamInit(
            client_version="v1",
            manifest=epb.PipelineManifest(
                version="v1", nodes=[epb.NodeManifest(id="x", node_type="NoSuchNode")]
            ),
        )
    )
    async with (
        _serve("--auth-token", TOKEN, "--max-sessions", "1") as server,
        webrtc_loop(),
        trio.open_nursery() as nursery,
    ):
        with trio.fail_after(120):
            with pytest.raises(Refused) as manifest:
                await open_session(server.base, init=bad, token=TOKEN, nursery=nursery)
            with pytest.raises(Refused) as token:
                await open_session(server.base, pipeline="vad", token="wrong", nursery=nursery)
            with pytest.raises(Refused) as origin:
                await open_session(
                    server.base,
                    pipeline="vad",
                    token=TOKEN,
                    origin="http://evil.example",
                    nursery=nursery,
                )
            bad_sdp = await trio.to_thread.run_sync(
                post_offer,
                server.base,
                {"sdp": "v=0\r\nm=nonsense\r\n", "pipeline": "passthrough"},
                TOKEN,
            )
            first = await open_session(
                server.base, pipeline="passthrough", token=TOKEN, nursery=nursery
            )
            await first.until(lambda s: s.opened.is_set(), 10)
            with pytest.raises(Refused) as full:
                await open_session(
                    server.base, pipeline="passthrough", token=TOKEN, nursery=nursery
                )
            await close_session(first)
            # The slot comes free when the first hangs up; the server serves on.
            with trio.fail_after(10):
                again = await _open_when_free(server.base, nursery, token=TOKEN)
            await close_session(again)
            nursery.cancel_scope.cancel()
    assert manifest.value.status == 400
    error = manifest.value.body["error"]
    assert error["type"] == "VALIDATION"
    assert "$.nodes[0].node_type" in error["message"]
    decoded = spb.StreamResponse.FromString(
        __import__("base64").b64decode(manifest.value.body["response"])
    )
    assert decoded.error.message == error["message"]
    assert (token.value.status, token.value.body["error"]["type"]) == (401, "AUTHENTICATION")
    assert (origin.value.status, origin.value.body["error"]["type"]) == (403, "AUTHENTICATION")
    assert "--web-allowed-origins" in origin.value.body["error"]["message"]
    assert (full.value.status, full.value.body["error"]["type"]) == (503, "RESOURCE_LIMIT")
    status, body = bad_sdp
    assert (status, body["error"]["type"]) == (400, "VALIDATION"), body
    assert body["error"]["message"].startswith("offer.sdp cannot be used"), body


async def _open_when_free(base: str, nursery: trio.Nursery, **options: Any) -> RtcSession:
    """A passthrough session, offered again while the server says it is full (503)."""
    while True:
        try:
            return await open_session(base, pipeline="passthrough", nursery=nursery, **options)
        except Refused as refused:
            if refused.status != 503:
                raise
        await trio.sleep(0.2)


CLIENT = """
import sys, trio
sys.path.insert(0, {root!r})
from tests.clients.webrtc import open_session, webrtc_loop

async def main():
    async with webrtc_loop(), trio.open_nursery() as nursery:
        session = await open_session({base!r}, pipeline="passthrough", nursery=nursery)
        await session.until(lambda s: "ready" in s.kinds(), 30)
        print("ready", flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


async def test_a_client_that_vanishes_frees_its_slot_within_seconds() -> None:
    async with (
        _serve("--max-sessions", "1") as server,
        webrtc_loop(),
        trio.open_nursery() as nursery,
    ):
        script = CLIENT.format(root=str(ROOT), base=server.base)
        client = await trio.lowlevel.open_process(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, env=dict(os.environ)
        )
        try:
            assert client.stdout is not None
            with trio.fail_after(60):
                assert b"ready" in await client.stdout.receive_some(100)
            client.kill()  # no goodbye: its peer just stops answering
            await client.wait()
            gone_at = trio.current_time()
            with trio.fail_after(15):
                session = await _open_when_free(server.base, nursery)
            freed_after = trio.current_time() - gone_at
            await close_session(session)
            nursery.cancel_scope.cancel()
        finally:
            await reap(client)
    # It pinged each second until killed; gone after PEER_SILENCE (5 s) without a word,
    # long before aioice's consent checks (about 30 s) would have noticed.
    assert 3 < freed_after < 8, freed_after


async def test_a_drain_ends_each_webrtc_session_with_closed() -> None:
    async with _serve() as server, webrtc_loop(), trio.open_nursery() as nursery:
        with trio.fail_after(60):
            sessions = [
                await open_session(server.base, pipeline="passthrough", nursery=nursery)
                for _ in range(2)
            ]
            for session in sessions:
                await session.until(lambda s: "ready" in s.kinds(), 30)
                session.ping()
            server.process.send_signal(signal.SIGTERM)
            for session in sessions:
                await session.until(lambda s: "closed" in s.kinds(), 30)
            assert await server.process.wait() == 0
            for session in sessions:
                await close_session(session)
            nursery.cancel_scope.cancel()
    for session in sessions:
        (closed,) = [r.closed for _, r in session.responses if r.WhichOneof("response") == "closed"]
        assert closed.reason == "Server is shutting down"


LATE_FRAMES = 6
"""What may still come out of the client's track after `interrupted` arrived: frames
the server's track gave its sender before the cut, held by the client's jitter
buffer (this client's aiortc releases an audio frame once 4 more have arrived: 80
ms), one in flight and one in the sender's encoder (it encodes in a thread). The
server sends nothing of the reply after the cut; a browser's jitter buffer holds
40-100 ms the same way (the page test measures its track falling silent)."""


async def test_a_reply_talked_over_is_cut_and_none_of_it_arrives_after_interrupted() -> None:
    from remotemedia.cli.converse import INTERRUPTION, QUESTION
    from remotemedia.testing import synthesize_speech

    def spoken(text: str) -> np.ndarray:
        sample = synthesize_speech((text,), lead_s=0.0, tail_s=0.0)
        samples: np.ndarray = soxr.resample(sample.audio.samples, sample.audio.sample_rate, 48_000)
        return samples.astype(np.float32)

    question, interruption = spoken(QUESTION), spoken(INTERRUPTION)
    async with _serve() as server, webrtc_loop(), trio.open_nursery() as nursery:
        with trio.fail_after(150):
            session = await open_session(
                server.base,
                pipeline="converse",
                microphone=np.zeros(48_000, np.float32),
                nursery=nursery,
            )
            await session.until(lambda s: "ready" in s.kinds(), 60)
            assert session.microphone is not None
            session.microphone.play(question)
            # The reply plays a while, then the user talks over it.
            await session.until(lambda s: _loud(s.audio()).sum() >= 60, 60)
            session.microphone.play(interruption)
            await session.until(lambda s: _interrupted(s) is not None, 30)
            cut_at, cut = _interrupted(session)  # type: ignore[misc]
            await session.until(lambda s: _reply_after(s, cut["turn"]) is not None, 60)
            next_at = _reply_after(session, cut["turn"])
            frames = list(session.frames)
            await close_session(session)
            nursery.cancel_scope.cancel()
    assert next_at is not None
    loud_before = [at for at, f in frames if at < cut_at and _is_loud(f)]
    late = [at for at, f in frames if cut_at < at < next_at and _is_loud(f)]
    assert loud_before, "the reply was never heard"
    # Nothing of the cut reply after `interrupted` but what the jitter buffer held.
    assert len(late) <= LATE_FRAMES, [round(at - cut_at, 3) for at in late]
    assert all(at - cut_at <= (LATE_FRAMES + 1) * 0.020 for at in late), late
    # spoken_ms is what the track sent of the turn: about what the client received of
    # it (every frame that is not the track's digital silence, quiet parts included).
    until = cut_at + (LATE_FRAMES + 1) * 0.020  # (what the jitter buffer still held)
    received_ms = 20 * sum(1 for at, f in frames if at <= until and np.sqrt(np.mean(f**2)) > 1e-4)
    assert abs(int(cut["spoken_ms"]) - received_ms) <= 200, (cut["spoken_ms"], received_ms)


def _is_loud(frame: np.ndarray) -> bool:
    return bool(np.sqrt(np.mean(frame**2)) > 0.01)


def _interrupted(session: RtcSession) -> tuple[float, dict[str, Any]] | None:
    return next(
        ((at, value) for at, value in session.json_results() if value.get("interrupted")), None
    )


def _reply_after(session: RtcSession, turn: object) -> float | None:
    """When the first reply text of a turn other than ``turn`` arrived."""
    return next(
        (
            at
            for at, value in session.json_results()
            if isinstance(value.get("reply"), str) and value.get("turn") != turn
        ),
        None,
    )


@pytest.mark.parametrize(
    ("flag", "words"),
    [
        ("--max-duration", "maximum duration of 2 s"),
        # Heartbeats keep the peer alive, but they are not the session's input.
        ("--idle-timeout", "No message from the client for 2 s"),
    ],
)
async def test_session_limits_end_a_webrtc_session_as_on_the_other_edges(
    flag: str, words: str
) -> None:
    async with _serve(flag, "2") as server, webrtc_loop(), trio.open_nursery() as nursery:
        with trio.fail_after(30):
            session = await open_session(server.base, pipeline="passthrough", nursery=nursery)
            await session.until(lambda s: "error" in s.kinds(), 20)
            # The server hangs up after the error: the data channel closes.
            await session.until(lambda s: s.closed.is_set(), 10)
            await close_session(session)
            nursery.cancel_scope.cancel()
    (error,) = [r.error for _, r in session.responses if r.WhichOneof("response") == "error"]
    assert error.error_type == pb.ERROR_TYPE_RESOURCE_LIMIT, error
    assert words in error.message


class _Stuck(Node[Any]):
    """Takes its first input and never finishes it: the session falls behind."""

    node_type = "Stuck"
    accepts = frozenset({"audio"})

    async def process(self, data: RuntimeData) -> Any:
        await trio.sleep_forever()


async def test_a_session_behind_the_microphone_drops_frames_and_counts_them() -> None:
    registry = builtin_registry()
    registry.register(_Stuck)
    config = ServerConfig(
        bind="127.0.0.1:0",
        metrics_port=0,
        web_port=0,
        webrtc=WebRtcConfig(mode="on", host_addresses=("127.0.0.1",)),
    )
    init = spb.StreamRequest(
        init=spb.StreamInit(
            client_version="v1",
            manifest=epb.PipelineManifest(
                version="v1", nodes=[epb.NodeManifest(id="stuck", node_type="Stuck")]
            ),
        )
    )
    seconds = 4.0
    shutdown = trio.Event()
    with trio.fail_after(60):
        async with trio.open_nursery() as servers:
            address = await servers.start(
                functools.partial(serve, config, shutdown, registry=registry)
            )
            async with webrtc_loop(), trio.open_nursery() as nursery:
                session = await open_session(
                    f"http://127.0.0.1:{address.web_port}",
                    init=init,
                    microphone=np.zeros(int(seconds * 48_000), np.float32),
                    nursery=nursery,
                )
                await session.until(lambda s: "ready" in s.kinds(), 30)
                await trio.sleep(seconds)
                assert session.microphone is not None
                sent = len(session.microphone.sent_at)
                dropped = await _metric(
                    address.metrics_port,
                    'remotemedia_stream_chunks_dropped_total{reason="webrtc_session_behind"}',
                )
                await close_session(session)
                nursery.cancel_scope.cancel()
            shutdown.set()
    # What the session took is bounded by its channels (about 45 frames between the
    # call's inbox and the stuck node) and the call's queue (50 frames): the rest of
    # what the microphone sent was dropped and counted, and nothing grew with time.
    assert sent >= seconds * 50 * 0.9
    assert 50 <= sent - dropped <= 120, (sent, dropped)


async def _metric(port: int, series: str) -> float:
    def read() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
            return str(reply.read().decode())

    body = await trio.to_thread.run_sync(read)
    line = next((line for line in body.splitlines() if line.startswith(series + " ")), None)
    return float(line.split()[-1]) if line else 0.0
