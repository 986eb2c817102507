"""The bundled converse pipeline over real gRPC: a reply cut by the user, and nothing after.

The scripted user of ``remotemedia demo --converse`` (a live microphone: chunks sent
in real time) asks a question, lets the reply play a moment, then talks over it.

Long turns and replies run against `remotemedia serve` as a process of its own, so
that what the server process loaded (Piper, or not) is its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from remotemedia import Audio, Json, Text
from remotemedia.cli.converse import INTERRUPTION, QUESTION, converse
from remotemedia.client import open_trio_client
from remotemedia.config import ServerConfig
from remotemedia.session import Result
from remotemedia.testing import word_error_rate
from remotemedia.transport.serving import serve
from tests.processes import children_of, server_process, worker_pids

pytest.importorskip("piper", reason="needs remotemedia[piper]")
pytest.importorskip("faster_whisper", reason="needs remotemedia[whisper]")
pytestmark = pytest.mark.slow


async def test_a_reply_the_user_talks_over_is_cut_and_none_of_its_audio_follows() -> None:
    shutdown = trio.Event()
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve, ServerConfig(bind="127.0.0.1:0"), shutdown)
            talk = await converse(f"{server.host}:{server.port}")
            shutdown.set()
    lines = "\n".join(f"{when:6.2f} {what}" for when, what in talk.timeline)
    (when, interrupted), *_ = talk.interrupted
    assert interrupted["turn"] == "coordinator-t1", lines
    assert talk.late_audio == 0, lines  # no audio of the cut reply after its `interrupted`
    assert talk.reply_audio > 0
    # Cut mid-reply: it had played a while (the user waits 1.2 s into it), not to its end.
    assert 800 <= int(interrupted["spoken_ms"]) <= 3000, lines
    barge_in = talk.speech[1][0]
    assert 0 < when - barge_in < 1.0, lines  # the debounce is 150 ms
    transcripts = [what for _, what in talk.timeline if what.startswith("transcript")]
    assert word_error_rate(QUESTION, transcripts[0].removeprefix("transcript: ")) <= 0.25, lines
    heard_later = " ".join(t.removeprefix("transcript: ") for t in transcripts[1:])
    assert word_error_rate(INTERRUPTION, heard_later.replace("'", "")) <= 0.5, lines
    assert talk.done, lines  # the reply to the interruption was spoken to its end
    assert worker_pids() == set()


# 28,572 numbered words, no punctuation: 200,003 characters (the input).
LONG_WORDS = [f"w{i:05d}" for i in range(28_572)]
LONG_TURN = " ".join(LONG_WORDS)


def spoke_with_piper(pid: int) -> bool:
    """Whether the process synthesised with Piper (it loads its espeak-ng bridge then)."""
    try:
        return "espeakbridge" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False  # it exited meanwhile


def piper_spoke_in_a_worker_only(server: trio.Process) -> None:
    assert not spoke_with_piper(server.pid), "the server process synthesised with Piper"
    workers = children_of(server.pid)
    assert [pid for pid in workers if spoke_with_piper(pid)], "no worker synthesised"


def value(result: Result) -> dict[str, Any]:
    return dict(result.data.value) if isinstance(result.data, Json) else {}


async def test_a_typed_turn_of_200000_characters_is_refused_and_the_next_is_answered() -> None:
    with trio.fail_after(120):
        async with (
            server_process() as (server, address, _),
            open_trio_client(address) as client,
            client.stream("converse") as stream,
        ):
            await stream.send(Text(LONG_TURN), node_id="coordinator")
            await stream.send(Text("hello there"), node_id="coordinator")
            results: list[Result] = []
            async for result in stream:
                results.append(result)
                if "turn_done" in value(result):
                    break
            piper_spoke_in_a_worker_only(server)
            await stream.close()
    failures = [r for r in results if r.error is not None]
    assert [(r.node_id, r.sequence) for r in failures] == [("coordinator", 0)]
    assert "the user's turn is 200,003 characters long, more than max_turn_chars (2,000)" in str(
        failures[0].error
    )
    replies = [value(r)["reply"] for r in results if "turn" in value(r) and "reply" in value(r)]
    assert replies == ["You said:", "hello there"]
    done = value(results[-1])
    assert (done["turn_done"], done["reply"]) == ("coordinator-t1", "You said: hello there")
    assert any(isinstance(r.data, Audio) for r in results)


LONG_REPLY = {
    "version": "v1",
    "metadata": {"name": "long-reply"},
    "nodes": [
        {
            "id": "coordinator",
            "node_type": "ConversationCoordinatorNode",
            "params": {
                "max_turn_chars": 200_003,  # the loopback says it all back
                "max_piece_chars": 120,  # what the worker has left when cut: a second or so
                "rejoin_cut_turn_ms": 0,  # the next words are a turn of their own
            },
        }
    ],
}


async def test_a_long_reply_is_cut_short_spoken_by_a_worker_and_a_barge_in_waits_for_none() -> None:
    timeline: list[tuple[float, Result]] = []
    with trio.fail_after(120):
        async with (
            server_process() as (server, address, _),
            open_trio_client(address) as client,
            client.stream(LONG_REPLY) as stream,
        ):
            await stream.send(Text(LONG_TURN), node_id="coordinator")
            async for result in stream:
                timeline.append((trio.current_time(), result))
                if value(result).get("reply", "").startswith("w00000"):
                    break  # its synthesis in the worker starts now: talk over it
            piper_spoke_in_a_worker_only(server)
            asked = trio.current_time()
            await stream.send(Text("hello there"), node_id="coordinator")
            async for result in stream:
                timeline.append((trio.current_time(), result))
                if value(result).get("interrupted"):
                    await stream.close()  # the user is done: the last reply goes out unpaced
            piper_spoke_in_a_worker_only(server)
    results = [r for _, r in timeline]
    (truncated,) = [value(r) for r in results if value(r).get("truncated")]
    assert truncated == {
        "turn": "coordinator-t1",
        "truncated": True,
        "reply_chars": len("You said: ") + len(LONG_TURN),
        "limit": 4_000,
    }
    pieces = [
        value(r)["reply"]
        for r in results
        if value(r).get("turn") == "coordinator-t1" and "reply" in value(r)
    ]
    assert pieces[0] == "You said:"
    assert 0 < len(pieces[1]) <= 120
    assert pieces[1].split() == LONG_WORDS[: len(pieces[1].split())]  # whole words
    # The barge-in is answered at once, not after the worker's synthesis in progress.
    (when, interrupted), *_ = [(t, r) for t, r in timeline if value(r).get("interrupted")]
    assert value(interrupted)["turn"] == "coordinator-t1"
    assert when - asked < 0.5
    after = results[results.index(interrupted) :]
    assert not [
        r
        for r in after
        if isinstance(r.data, Audio) and r.data.metadata.get("turn") == "coordinator-t1"
    ]
    # The worker finished the cut piece, then spoke the next turn.
    (done,) = [value(r) for r in results if "turn_done" in value(r)]
    assert (done["turn_done"], done["reply"]) == ("coordinator-t2", "You said: hello there")
    assert [r for r in after if isinstance(r.data, Audio)]
    assert not [r for r in results if r.error is not None]
