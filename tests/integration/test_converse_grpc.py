"""The bundled converse pipeline over real gRPC: a reply cut by the user, and nothing after.

The scripted user of ``remotemedia demo --converse`` (a live microphone: chunks sent
in real time) asks a question, lets the reply play a moment, then talks over it.
"""

from __future__ import annotations

import pytest
import trio

from remotemedia.cli.converse import INTERRUPTION, QUESTION, converse
from remotemedia.config import ServerConfig
from remotemedia.testing import word_error_rate
from remotemedia.transport.serving import serve
from tests.processes import worker_pids

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
