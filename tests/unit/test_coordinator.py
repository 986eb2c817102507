"""ConversationCoordinatorNode: reply turns and barge-in, on Trio's autojump clock.

The coordinator runs in a real session; only its voice is a test double (a second
of silence per sentence, with no model), so the timing is exact.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
import pytest
import trio
import trio.testing

from remotemedia import Audio, Json, NodeError, NodeRegistry, Result, Text
from remotemedia.manifest import manifest_from_dict
from remotemedia.nodes import builtin_registry
from remotemedia.nodes.conversation.coordinator import (
    ConversationCoordinatorNode,
    CoordinatorParams,
)
from remotemedia.nodes.conversation.responders import Exchange
from remotemedia.session import Session, compile_graph, open_session

SENTENCE_S = 1.0  # the fake voice speaks every sentence in one second


class SilentVoice:
    """Speaks every sentence as SENTENCE_S of silence, in one piece, with no model."""

    spoken: list[str]

    async def initialize(self) -> None:
        self.spoken = []

    async def speak(self, text: str) -> AsyncIterator[Audio]:
        self.spoken.append(text)
        await trio.sleep(0.05)  # synthesis takes a moment
        yield Audio(np.zeros(int(16_000 * SENTENCE_S), np.float32), 16_000)

    async def cleanup(self) -> None:
        pass


class Chatty:
    """A responder that says two sentences, a word at a time, 10 ms apart."""

    async def reply(self, text: str, history: Sequence[Exchange]) -> AsyncIterator[str]:
        for word in f"I heard {text.rstrip('.')}. Tell me more about that.".split():
            await trio.sleep(0.01)
            yield word + " "


class Silent:
    """A responder that never answers."""

    async def reply(self, text: str, history: Sequence[Exchange]) -> AsyncIterator[str]:
        await trio.sleep_forever()
        yield ""


class FakeVoiceCoordinator(ConversationCoordinatorNode):
    node_type = "TestCoordinator"
    responder_class: type = Chatty

    def __init__(self, node_id: str, params: CoordinatorParams) -> None:
        super().__init__(node_id, params)
        self.speaker = SilentVoice()
        self.responder = self.responder_class()
        INSTANCES.append(self)


class SilentCoordinator(FakeVoiceCoordinator):
    node_type = "SilentCoordinator"
    responder_class = Silent


class LongWinded:
    """A responder that goes on and on: the user's words 100 times, streamed in 7-character
    pieces, with no punctuation at all."""

    async def reply(self, text: str, history: Sequence[Exchange]) -> AsyncIterator[str]:
        said = " ".join([text] * 100)
        for start in range(0, len(said), 7):
            await trio.lowlevel.checkpoint()
            yield said[start : start + 7]


class LongWindedCoordinator(FakeVoiceCoordinator):
    node_type = "LongWindedCoordinator"
    responder_class = LongWinded


INSTANCES: list[FakeVoiceCoordinator] = []


@pytest.fixture
def registry() -> NodeRegistry:
    registry = builtin_registry()
    registry.register(FakeVoiceCoordinator)
    registry.register(SilentCoordinator)
    registry.register(LongWindedCoordinator)
    INSTANCES.clear()
    return registry


def graph(registry: NodeRegistry, node_type: str = "TestCoordinator", **params: Any) -> Any:
    manifest = manifest_from_dict(
        {
            "version": "v1",
            "metadata": {"name": "converse"},
            "nodes": [{"id": "coordinator", "node_type": node_type, "params": params}],
        }
    )
    return compile_graph(manifest, registry)


def final(text: str) -> Json:
    return Json({"text": text, "segments": [], "language": "en"})


def interim(stable: str, unstable: str = "") -> Json:
    return Json({"interim": True, "utterance": "u", "stable": stable, "unstable": unstable})


class User:
    """Sends the user's side: VAD events every 32 ms of stream time, and transcripts."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.stream_ms = 0.0

    async def vad(self, probability: float, seconds: float) -> None:
        for _ in range(round(seconds / 0.032)):
            await trio.sleep(0.032)
            self.stream_ms += 32
            value = {
                "has_speech": probability > 0.5,
                "speech_probability": probability,
                "timestamp_ms": self.stream_ms,
                "samples": 512,
                "sample_rate": 16_000,
            }
            await self.session.send(Json(value))


async def converse(
    registry: NodeRegistry, script: Any, node_type: str = "TestCoordinator", **params: Any
) -> list[tuple[float, Result]]:
    """Run the coordinator with ``script(user)`` as the user; (time, result) of every result."""
    results: list[tuple[float, Result]] = []
    async with open_session(graph(registry, node_type, **params), registry) as session:

        async def play() -> None:
            await script(User(session))
            await session.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(play)
            async for result in session:
                results.append((trio.current_time(), result))
    return results


def values(results: list[tuple[float, Result]], key: str) -> list[dict[str, Any]]:
    return [r.data.value for _, r in results if isinstance(r.data, Json) and key in r.data.value]


def audio_of(results: list[tuple[float, Result]], turn: str) -> list[tuple[float, Audio]]:
    return [
        (t, r.data)
        for t, r in results
        if isinstance(r.data, Audio) and r.data.metadata.get("turn") == turn
    ]


async def test_a_reply_is_spoken_sentence_by_sentence_paced_ahead_of_playback(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    async def script(user: User) -> None:
        await user.session.send(final("hello there"))
        await user.vad(0.0, 3.0)  # silence while the reply plays

    started = trio.current_time()
    results = await converse(registry, script)
    replies = [v["reply"] for v in values(results, "reply") if "turn" in v]
    assert replies == ["I heard hello there.", "Tell me more about that."]
    audio = audio_of(results, "coordinator-t1")
    assert sum(a.num_frames for _, a in audio) == 2 * 16_000 * SENTENCE_S
    assert {a.num_frames for _, a in audio} == {1_600}  # 100 ms chunks
    # Never more than the lead (200 ms) ahead of real time: the 20th chunk (1.9-2.0 s
    # of speech) goes out at 1.7 s after playback began.
    first = audio[0][0]
    assert audio[-1][0] - first == pytest.approx(2.0 - 0.1 - 0.2, abs=0.001)
    (done,) = values(results, "turn_done")
    assert done == {
        "turn_done": "coordinator-t1",
        "spoken_ms": 2000,
        "reply": "I heard hello there. Tell me more about that.",
    }
    assert first - started < 0.2
    node = INSTANCES[0]
    assert list(node.history) == [Exchange("hello there", done["reply"])]


async def test_the_user_barging_in_cancels_the_reply_and_none_of_its_audio_follows(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    speech_began: list[float] = []

    async def script(user: User) -> None:
        await user.session.send(final("hello there"))
        await user.vad(0.0, 0.8)  # the reply plays...
        speech_began.append(trio.current_time())
        await user.vad(0.9, 0.6)  # ...and the user talks over it
        await user.vad(0.0, 2.0)

    results = await converse(registry, script)
    (interrupted,) = values(results, "interrupted")
    assert interrupted["turn"] == "coordinator-t1"
    assert interrupted["targets"] == ["llm", "audio"]
    when = next(t for t, r in results if isinstance(r.data, Json) and r.data.value is interrupted)
    # Debounce (150 ms) in 32 ms VAD chunks: the fifth chunk of speech (160 ms).
    assert when - speech_began[0] == pytest.approx(0.16, abs=0.001)
    # Played: from the reply's start to the interruption; sent ahead of it: not counted.
    audio = audio_of(results, "coordinator-t1")
    assert interrupted["spoken_ms"] == round((when - audio[0][0]) * 1000)
    assert audio
    assert all(t <= when for t, _ in audio)
    index = next(
        i
        for i, (_, r) in enumerate(results)
        if isinstance(r.data, Json) and r.data.value is interrupted
    )
    assert not [r for _, r in results[index:] if isinstance(r.data, Audio)]
    assert values(results, "turn_done") == []
    node = INSTANCES[0]
    assert node.counts["barge_in"] == 1
    # The history keeps the sentences whose audio all went out.
    (exchange,) = node.history
    assert exchange == Exchange("hello there", "I heard hello there.", interrupted=True)


async def test_a_cough_shorter_than_the_debounce_does_not_interrupt(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    async def script(user: User) -> None:
        await user.session.send(final("hello"))
        await user.vad(0.0, 0.5)
        await user.vad(0.9, 0.096)  # three chunks of speech: under 150 ms
        await user.vad(0.0, 2.5)

    results = await converse(registry, script)
    assert values(results, "interrupted") == []
    assert len(values(results, "turn_done")) == 1


async def test_with_words_required_speech_alone_does_not_interrupt_but_words_do(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    async def script(user: User) -> None:
        await user.session.send(final("hello there"))
        await user.vad(0.0, 0.5)
        await user.vad(0.9, 0.4)  # speech, but no words yet
        await user.session.send(interim("", "wait"))  # one word: not enough
        await user.vad(0.9, 0.1)
        await user.session.send(interim("wait", "a second"))
        await user.vad(0.0, 2.0)

    results = await converse(registry, script, min_interruption_words=2)
    (interrupted,) = values(results, "interrupted")
    interims = [v for v in values(results, "interim")]
    assert [v["stable"] for v in interims] == ["", "wait"]  # passed through to the client
    position = [r.data.value for _, r in results if isinstance(r.data, Json)]
    assert position.index(interrupted) > position.index(interims[1])


async def test_pause_then_decide_resumes_the_reply_when_no_words_come(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    paused_at: list[float] = []

    async def script(user: User) -> None:
        await user.session.send(final("hello there"))
        await user.vad(0.0, 0.5)
        await user.vad(0.9, 0.2)  # a cough: pauses the reply
        paused_at.append(trio.current_time())
        await user.vad(0.0, 3.0)

    results = await converse(registry, script, min_interruption_words=1, pause_then_decide_ms=400)
    assert values(results, "interrupted") == []
    (done,) = values(results, "turn_done")
    assert done["spoken_ms"] == 2000
    audio = audio_of(results, "coordinator-t1")
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(audio)]
    assert max(gaps) == pytest.approx(0.4, abs=0.1)  # silent while it decided
    assert INSTANCES[0].counts["barge_in_resumed"] == 1


async def test_a_backchannel_during_the_reply_starts_no_new_turn(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    async def script(user: User) -> None:
        await user.session.send(final("hello there"))
        await user.vad(0.0, 0.5)
        await user.session.send(final("Mhm."))
        await user.vad(0.0, 2.5)

    results = await converse(registry, script, min_interruption_words=2)
    assert values(results, "interrupted") == []
    assert [v["turn_done"] for v in values(results, "turn_done")] == ["coordinator-t1"]


async def test_a_new_transcript_interrupts_the_reply_and_starts_the_next_turn(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    async def script(user: User) -> None:
        await user.session.send(final("first"))
        await user.vad(0.0, 1.3)  # more than rejoin_cut_turn_ms of the reply is heard
        await user.session.send(final("second"))
        await user.vad(0.0, 3.0)

    results = await converse(registry, script)
    assert [v["turn"] for v in values(results, "interrupted")] == ["coordinator-t1"]
    assert [v["turn_done"] for v in values(results, "turn_done")] == ["coordinator-t2"]
    history = list(INSTANCES[0].history)
    assert [(e.user, e.interrupted) for e in history] == [("first", True), ("second", False)]


async def test_a_silent_responder_ends_its_turn_with_an_error_and_the_session_goes_on(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    async def script(user: User) -> None:
        await user.session.send(final("anyone there?"))
        await user.vad(0.0, 1.5)

    results = await converse(registry, script, "SilentCoordinator", llm_silence_timeout_ms=1000)
    (error,) = values(results, "error")
    assert error == {"turn": "coordinator-t1", "error": "the responder sent nothing for 1 s"}
    assert INSTANCES[0].counts["responder_failed"] == 1


def test_params_name_a_bad_barge_in_target_and_a_pause_without_words() -> None:
    with pytest.raises(ValueError, match=r"barge_in_targets must name one or both of"):
        CoordinatorParams(barge_in_targets=("speech",))
    with pytest.raises(ValueError, match=r"pause_then_decide_ms needs min_interruption_words"):
        CoordinatorParams(pause_then_decide_ms=300)


async def test_a_duplex_node_refuses_to_run_in_a_worker_process(registry: NodeRegistry) -> None:
    manifest = manifest_from_dict(
        {
            "version": "v1",
            "metadata": {"name": "converse"},
            "nodes": [{"id": "c", "node_type": "TestCoordinator", "executor": "process"}],
        }
    )
    with pytest.raises(NodeError, match=r"only in the server process"):
        async with open_session(compile_graph(manifest, registry), registry):
            pass


async def test_words_that_cut_a_reply_at_once_continue_the_users_turn(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    async def script(user: User) -> None:
        await user.session.send(final("Sorry,"))  # a pause after a comma ended it
        await user.vad(0.0, 0.15)
        await user.vad(0.9, 0.5)  # the user goes on: the reply is cut within 0.2 s
        await user.session.send(final("I meant London."))
        await user.vad(0.0, 3.0)

    results = await converse(registry, script)
    (cut,) = values(results, "interrupted")
    assert cut["spoken_ms"] < 1000
    replies = [v["reply"] for v in values(results, "reply") if "turn" in v]
    assert replies[-1] == "Tell me more about that."
    assert "I heard Sorry, I meant London." in replies
    node = INSTANCES[0]
    assert [e.user for e in node.history] == ["Sorry, I meant London."]
    assert node.counts["turn_rejoined"] == 1


async def test_typed_text_is_a_turn_too(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    async def script(user: User) -> None:
        await user.session.send(Text("typed hello"))

    results = await converse(registry, script)
    assert [v["reply"] for v in values(results, "turn_done")] == [
        "I heard typed hello. Tell me more about that."
    ]


def numbered_words(count: int) -> list[str]:
    return [f"w{i:05d}" for i in range(count)]


async def test_a_typed_turn_over_max_turn_chars_is_refused_and_the_conversation_goes_on(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    async def script(user: User) -> None:
        await user.session.send(Text(" ".join(numbered_words(28_572))))  # 200,003 characters
        await user.session.send(Text("hello there"))

    results = await converse(registry, script)
    failures = [r for _, r in results if r.error is not None]
    (failure,) = failures
    assert failure.sequence == 0
    assert failure.error is not None
    assert failure.error.node_id == "coordinator"
    assert "the user's turn is 200,003 characters long, more than max_turn_chars (2,000)" in str(
        failure.error
    )
    node = INSTANCES[0]
    assert isinstance(node.speaker, SilentVoice)
    assert node.speaker.spoken == ["I heard hello there.", "Tell me more about that."]
    assert [v["turn_done"] for v in values(results, "turn_done")] == ["coordinator-t1"]
    assert node.counts["turn_refused"] == 1


async def test_a_reply_over_max_reply_chars_is_spoken_in_word_bounded_pieces_and_cut_saying_so(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    words = numbered_words(285)  # 1,994 characters, within max_turn_chars

    async def script(user: User) -> None:
        await user.session.send(Text(" ".join(words)))

    results = await converse(registry, script, "LongWindedCoordinator")
    node = INSTANCES[0]
    assert isinstance(node.speaker, SilentVoice)
    spoken = node.speaker.spoken
    assert max(len(piece) for piece in spoken) <= 300
    # Cut between words: the pieces, joined, are the reply's first words, whole.
    heard = " ".join(spoken).split()
    assert heard == (words * 100)[: len(heard)]
    assert 4_000 - 7 <= len(" ".join(spoken)) <= 4_000
    (truncated,) = values(results, "truncated")
    assert truncated["turn"] == "coordinator-t1"
    assert truncated["limit"] == 4_000
    # The responder was stopped at the limit, not read to its end (199,499 characters).
    assert 4_000 < truncated["reply_chars"] <= 4_007
    (done,) = values(results, "turn_done")
    assert done["reply"] == " ".join(spoken)
    assert node.counts["reply_truncated"] == 1


async def test_a_long_sentence_goes_to_the_voice_in_pieces_cut_after_whole_words(
    registry: NodeRegistry, autojump_clock: trio.testing.MockClock
) -> None:
    words = numbered_words(100)  # 699 characters, and then a full stop

    async def script(user: User) -> None:
        await user.session.send(Text(" ".join(words) + "."))

    await converse(registry, script, max_piece_chars=100)
    node = INSTANCES[0]
    assert isinstance(node.speaker, SilentVoice)
    spoken = node.speaker.spoken
    assert spoken[0].startswith("I heard w00000 ")
    assert max(len(piece) for piece in spoken) <= 100
    assert " ".join(spoken).split()[2:102] == [*words[:99], words[99] + "."]
