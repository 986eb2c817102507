"""Per-turn latency: the tracker's rules (sans-IO); a session's histograms (autojump clock)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import attrs
import numpy as np
import pytest
import trio
import trio.testing

from remotemedia import Audio, Json, NodeRegistry, Text
from remotemedia.events import (
    FinalTranscript,
    Interrupted,
    ReplyPiece,
    ReplySentence,
    SpeechEnded,
    SpeechStarted,
    TurnDone,
    VoiceActivity,
)
from remotemedia.manifest import manifest_from_dict
from remotemedia.media import INTERIM, Control
from remotemedia.nodes import ANY, Node, builtin_registry
from remotemedia.observability import NodeRole, Turn, TurnTracker, roles_watched
from remotemedia.observability.turns import OPEN_TURNS, REMEMBERED_CHUNKS
from remotemedia.params import param
from remotemedia.service.metrics import ServerMetrics
from remotemedia.service.turns import TurnReporter, turn_fields
from remotemedia.session import compile_graph, open_session

VAD = NodeRole("vad", "SileroVADNode")
ACC = NodeRole("acc", "AudioBufferAccumulatorNode")
ASR = NodeRole("asr", "WhisperNode")
BOT = NodeRole("bot", "ConversationCoordinatorNode")
LLM = NodeRole("llm", "LFM2TextNode")
TTS = NodeRole("tts", "PiperTTSNode", voice=True)


@attrs.define
class Recorder:
    """A TurnObserver that keeps what it is told."""

    turns: list[Turn] = attrs.field(factory=list)
    thrown: list[str] = attrs.field(factory=list)

    moments: list[tuple[int, str, str, float | None, float]] = attrs.field(factory=list)

    def moment(
        self, turn: Turn, stage: str, role: NodeRole, started: float | None, at: float
    ) -> None:
        self.moments.append((turn.index, stage, role.node_id, started, at))

    def turn_ended(self, turn: Turn) -> None:
        self.turns.append(turn)

    def wasted(self, kind: str) -> None:
        self.thrown.append(kind)


def recorder() -> tuple[Recorder, Recorder]:
    record = Recorder()
    return record, record


def ended(ms: float) -> VoiceActivity:
    return VoiceActivity(transitions=(SpeechEnded(ms),))


def started(ms: float) -> VoiceActivity:
    return VoiceActivity(transitions=(SpeechStarted(ms),))


def transcript(end_ms: float, utterance: str = "u1", text: str = "hello there") -> FinalTranscript:
    return FinalTranscript(text, start_ms=0.0, end_ms=end_ms, utterance=utterance)


def stream(tracker: TurnTracker, chunks: int, *, start: float = 0.0, step: float = 0.02) -> float:
    """Feed ``chunks`` 20 ms chunks arriving every ``step`` s from ``start``; the last arrival."""
    now = start
    for index in range(chunks):
        now = start + index * step
        tracker.audio_in(now, 0.02)
    return now


def utterance_audio(utterance: str, **metadata: str) -> Audio:
    return Audio(np.zeros(160, np.float32), 16_000, metadata={"utterance": utterance, **metadata})


# --- the tracker -------------------------------------------------------------------


def test_turns_transcribe_stages_are_measured_from_the_arrival_of_the_speech_end() -> None:
    record, observer = recorder()
    tracker = TurnTracker(observer, replies=False)
    stream(tracker, 40)  # chunk i (ending at (i+1)*20 ms) arrives at i*0.02 s
    tracker.output(VAD, 0.80, ended(500.0))  # 500 ms is the end of chunk 24: arrived at 0.48
    tracker.output(ASR, 1.05, transcript(500.0))
    (turn,) = record.turns
    assert turn.outcome == "transcribed"
    assert turn.stages() == pytest.approx({"vad": 0.32, "transcribe": 0.25})
    assert turn.totals() == pytest.approx({"transcript": 0.57})
    assert turn.node_types == {"vad": "SileroVADNode", "transcribe": "WhisperNode"}
    assert turn.user_chars == len("hello there")


def test_turns_a_transcript_is_matched_to_the_report_of_its_own_end() -> None:
    record, observer = recorder()
    tracker = TurnTracker(observer, replies=False)
    stream(tracker, 100)
    tracker.output(VAD, 0.70, ended(400.0))  # arrived 0.38
    tracker.output(VAD, 1.50, ended(1200.0))  # arrived 1.18
    tracker.output(ASR, 1.60, transcript(400.0, "u1"))  # the first, late
    tracker.output(ASR, 1.70, transcript(1200.0, "u2"))
    first, second = record.turns
    assert first.stages() == pytest.approx({"vad": 0.32, "transcribe": 0.90})
    assert second.stages() == pytest.approx({"vad": 0.32, "transcribe": 0.20})


def test_turns_a_transcript_passed_on_by_another_node_counts_once() -> None:
    record, observer = recorder()
    tracker = TurnTracker(observer, replies=False)
    stream(tracker, 40)
    tracker.output(VAD, 0.8, ended(500.0))
    tracker.output(ASR, 1.0, transcript(500.0))
    tracker.output(BOT, 1.0, Json(transcript(500.0).value))  # as a plain Json, from a worker
    assert len(record.turns) == 1


@pytest.mark.parametrize(
    ("cuts", "expected"),
    [
        ([{"speculation": "acc-1"}, {"commits": "acc-1"}], "hit"),
        ([{"speculation": "acc-1"}, {}], "miss"),
        ([{INTERIM: "1"}, {}], "off"),
    ],
)
def test_turns_label_the_transcript_with_the_speculation_outcome(
    cuts: list[dict[str, str]], expected: str
) -> None:
    record, observer = recorder()
    tracker = TurnTracker(observer, replies=False)
    stream(tracker, 40)
    for metadata in cuts:
        tracker.output(ACC, 0.7, utterance_audio("u1", **metadata))
    tracker.output(VAD, 0.8, ended(500.0))
    tracker.output(ASR, 0.8, transcript(500.0, "u1"))
    assert record.turns[0].speculation == expected


def test_turns_a_cancelled_speculation_is_wasted_work() -> None:
    record, observer = recorder()
    tracker = TurnTracker(observer, replies=False)
    tracker.output(ACC, 0.5, Control("cancel_speculation", "acc-1"))
    tracker.output(ACC, 0.5, Control("batch_hint"))
    assert record.thrown == ["speculation"]


def test_turns_a_conversation_turn_is_timed_to_its_first_reply_text_and_audio() -> None:
    record, observer = recorder()
    tracker = TurnTracker(observer, replies=True)
    stream(tracker, 40)
    tracker.output(VAD, 0.8, ended(500.0))
    tracker.output(ASR, 1.0, transcript(500.0))
    assert record.turns == []  # open until its reply is over
    tracker.output(BOT, 1.0, transcript(500.0))  # passed through
    tracker.output(BOT, 1.4, ReplySentence("bot-t1", "Hi."))
    tracker.output(BOT, 1.5, ReplySentence("bot-t1", "How are you?"))  # not the first
    reply_audio = Audio(np.zeros(160, np.float32), 16_000, metadata={"turn": "bot-t1"})
    tracker.output(BOT, 1.65, reply_audio)
    tracker.output(BOT, 1.7, reply_audio)
    tracker.output(BOT, 3.0, TurnDone("bot-t1", 1200, "Hi. How are you?"))
    (turn,) = record.turns
    assert (turn.outcome, turn.reply, turn.spoken_ms) == ("replied", "bot-t1", 1200)
    assert turn.ended == 3.0
    assert turn.stages() == pytest.approx(
        {"vad": 0.32, "transcribe": 0.2, "reply_text": 0.4, "reply_audio": 0.25}
    )
    assert turn.totals() == pytest.approx(
        {"transcript": 0.52, "reply_text": 0.92, "reply_audio": 1.17}
    )


def test_turns_barge_in_times_the_users_speech_start_to_interrupted() -> None:
    record, observer = recorder()
    tracker = TurnTracker(observer, replies=True)
    stream(tracker, 150)
    tracker.output(ASR, 1.0, transcript(500.0))
    tracker.output(BOT, 1.4, ReplySentence("bot-t1", "Once upon a time"))
    tracker.output(VAD, 2.5, started(2000.0))  # the chunk ending at 2,000 ms arrived at 1.98
    tracker.output(BOT, 2.3, Interrupted("bot-t1", 700, ("llm", "audio")))
    (turn,) = record.turns
    assert turn.outcome == "interrupted"
    assert turn.stages()["interrupt"] == pytest.approx(0.32)
    assert turn.node_types["interrupt"] == "ConversationCoordinatorNode"
    assert record.thrown == ["reply"]


def test_turns_typed_text_makes_a_turn_without_speech_times() -> None:
    record, observer = recorder()
    tracker = TurnTracker(observer, replies=True)
    tracker.output(BOT, 5.0, ReplySentence("bot-t1", "You typed."))
    tracker.output(BOT, 5.2, Audio(np.zeros(10, np.float32), 16_000, metadata={"turn": "bot-t1"}))
    tracker.output(BOT, 6.0, TurnDone("bot-t1", 500, "You typed."))
    (turn,) = record.turns
    assert turn.stages() == pytest.approx({"reply_audio": 0.2})
    assert turn.totals() == {}


def test_turns_unnamed_replies_end_at_the_next_transcript_and_keep_their_voice() -> None:
    record, observer = recorder()
    tracker = TurnTracker(observer, replies=True)
    stream(tracker, 200)
    voice = Audio(np.zeros(160, np.float32), 16_000)
    tracker.output(ASR, 1.0, transcript(500.0, "u1"))
    tracker.output(LLM, 1.3, ReplyPiece("Sure"))
    tracker.output(LLM, 1.4, ReplyPiece(", here"))
    tracker.output(TTS, 1.6, voice)
    tracker.output(ASR, 3.0, transcript(2500.0, "u2"))
    tracker.output(TTS, 3.1, voice)  # the first reply, still speaking: not the second's
    tracker.output(ASR, 3.1, Text("hello there"))  # Whisper's emit_text: not a reply
    tracker.output(LLM, 3.5, ReplyPiece("Next"))
    tracker.output(TTS, 3.9, voice)
    tracker.finish(4.0)
    first, second = record.turns
    assert (first.outcome, first.ended) == ("replied", 3.0)
    assert first.stages() == pytest.approx({"reply_text": 0.3, "reply_audio": 0.3})
    assert second.outcome == "replied"
    assert second.stages() == pytest.approx({"reply_text": 0.5, "reply_audio": 0.4})


def test_turns_a_transcript_without_a_reply_is_unanswered_when_the_next_comes() -> None:
    record, observer = recorder()
    tracker = TurnTracker(observer, replies=True)
    tracker.output(ASR, 1.0, transcript(500.0, "u1", "mhm"))
    tracker.output(ASR, 2.0, transcript(1500.0, "u2"))
    tracker.finish(3.0)
    assert [(t.index, t.outcome, t.ended) for t in record.turns] == [
        (1, "unanswered", 2.0),
        (2, "unanswered", 3.0),
    ]


def test_turns_memory_is_bounded() -> None:
    record, observer = recorder()
    tracker = TurnTracker(observer, replies=True)
    for index in range(OPEN_TURNS + 2):  # named replies with no transcript: all stay open
        tracker.output(BOT, float(index), ReplySentence(f"bot-t{index}", "Hi."))
    assert len(tracker.open_turns) == OPEN_TURNS
    assert [t.index for t in record.turns] == [1, 2]
    stream(tracker, REMEMBERED_CHUNKS + 10)
    assert tracker.arrival(100.0) is None  # forgotten: no time, not a guess
    assert tracker.arrival(20.0 * (REMEMBERED_CHUNKS + 10)) == pytest.approx(
        (REMEMBERED_CHUNKS + 9) * 0.02
    )


def test_turns_watch_only_the_nodes_that_speak_about_turns() -> None:
    registry = builtin_registry()
    declared = {
        node_type: (node_type, registry.get(node_type).accepts, registry.get(node_type).produces)
        for node_type in (
            "PassThrough",
            "FastResampleNode",
            "SileroVADNode",
            "AudioBufferAccumulatorNode",
            "WhisperNode",
        )
    }
    roles, replies = roles_watched(declared, ANY)
    assert set(roles) == {"SileroVADNode", "AudioBufferAccumulatorNode", "WhisperNode"}
    assert replies is False
    declared["PiperTTSNode"] = ("PiperTTSNode", frozenset({"text"}), frozenset({"audio"}))
    roles, replies = roles_watched(declared, ANY)
    assert roles["PiperTTSNode"].voice
    assert replies


def test_turn_fields_carry_the_stages_the_metrics_get() -> None:
    turn = Turn(3, speech_end=1.0, decided=1.3, transcribed=1.5, outcome="transcribed")
    turn.speculation, turn.user_chars = "hit", 11
    assert turn_fields(turn) == {
        "turn": 3,
        "outcome": "transcribed",
        "speculation": "hit",
        "stages": {"vad": 0.3, "transcribe": 0.2},
        "latency": {"transcript": 0.5},
        "user_chars": 11,
    }


# --- a session, on the autojump clock: the histograms get exactly the stage times ---


@attrs.frozen
class ScriptParams:
    end_ms: float = param(500.0, doc="stream ms where speech ends")
    hangover_ms: float = param(300.0, doc="silence before the end is reported")
    delay: float = param(0.01, doc="seconds the node takes")


class ScriptedVad(Node[ScriptParams]):
    """Reports the end of speech once ``hangover_ms`` of audio followed it, after ``delay``."""

    node_type = "ScriptedVad"
    Params = ScriptParams
    accepts = frozenset({"audio"})
    produces = frozenset({"json"})

    def __init__(self, node_id: str, params: ScriptParams) -> None:
        super().__init__(node_id, params)
        self.stream_ms = 0.0
        self.reported = False

    async def process(self, data: Any) -> Any:
        self.stream_ms += data.duration * 1000
        if self.reported or self.stream_ms < self.params.end_ms + self.params.hangover_ms:
            return None
        self.reported = True
        await trio.sleep(self.params.delay)
        return ended(self.params.end_ms)


class ScriptedAsr(Node[ScriptParams]):
    """Transcribes an end of speech in ``delay``."""

    node_type = "ScriptedAsr"
    Params = ScriptParams
    accepts = frozenset({"json", "audio"})
    produces = frozenset({"json"})

    async def process(self, data: Any) -> Any:
        await trio.sleep(self.params.delay)
        return transcript(data.transitions[0].ms)


class ScriptedReply(Node[ScriptParams]):
    """Replies to a transcript: a sentence after ``delay``, its audio 0.1 s later."""

    node_type = "ScriptedReply"
    Params = ScriptParams
    accepts = frozenset({"json", "text"})
    produces = frozenset({"json", "audio"})

    async def process(self, data: Any) -> AsyncIterator[Any]:
        await trio.sleep(self.params.delay)
        yield ReplySentence("r-t1", "Hello.")
        await trio.sleep(0.1)
        yield Audio(np.zeros(1600, np.float32), 16_000, metadata={"turn": "r-t1"})
        yield TurnDone("r-t1", 100, "Hello.")


async def test_session_turn_histograms_get_exactly_the_scripted_stage_times(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = NodeRegistry()
    for cls in (ScriptedVad, ScriptedAsr, ScriptedReply):
        registry.register(cls)
    manifest = manifest_from_dict(
        {
            "version": "v1",
            "metadata": {"name": "scripted"},
            "nodes": [
                {"id": "vad", "node_type": "ScriptedVad", "params": {"delay": 0.01}},
                {"id": "asr", "node_type": "ScriptedAsr", "params": {"delay": 0.2}},
                {"id": "bot", "node_type": "ScriptedReply", "params": {"delay": 0.15}},
            ],
            "connections": [{"from": "vad", "to": "asr"}, {"from": "asr", "to": "bot"}],
        }
    )
    graph = compile_graph(manifest, registry)
    metrics = ServerMetrics()
    reporter = TurnReporter.for_session(metrics, "s1", graph.name)
    chunk = Audio(np.zeros(320, np.float32), 16_000)  # 20 ms
    async with (
        open_session(graph, registry, turns=reporter, clock=trio.current_time) as session,
        trio.open_nursery() as nursery,
    ):

        async def drain() -> None:
            async for _ in session:
                pass

        nursery.start_soon(drain)
        for _ in range(60):  # real time: one chunk every 20 ms
            await session.send(chunk, node_id="vad")
            await trio.sleep(0.02)
        await session.send_eof()
    # Speech ended at 500 ms: the chunk holding it (the 25th) arrived at 0.48 s. The VAD
    # reported it with the 40th (0.78 s) after 0.01 s; the transcript took 0.2 s; the
    # sentence 0.15 s; the audio 0.1 s.
    expected = {"vad": 0.31, "transcribe": 0.2, "reply_text": 0.15, "reply_audio": 0.1}
    node_types = {
        "vad": "ScriptedVad",
        "transcribe": "ScriptedAsr",
        "reply_text": "ScriptedReply",
        "reply_audio": "ScriptedReply",
    }
    for stage, seconds in expected.items():
        labels = {
            "pipeline": "scripted",
            "stage": stage,
            "node_type": node_types[stage],
            "speculation": "off" if stage == "transcribe" else "",
        }
        assert metrics.turn_stage.count(**labels) == 1, stage
        assert metrics.turn_stage.sum(**labels) == pytest.approx(seconds, abs=1e-9), stage
    totals = {"transcript": 0.51, "reply_text": 0.66, "reply_audio": 0.76}
    for until, seconds in totals.items():
        assert metrics.turn_latency.sum(pipeline="scripted", until=until) == pytest.approx(
            seconds, abs=1e-9
        )
    assert metrics.turns.value(pipeline="scripted", outcome="replied") == 1
    assert [turn.outcome for turn in reporter.recent] == ["replied"]


def test_turns_tell_each_stages_moment_with_the_call_that_ended_it() -> None:
    record, observer = recorder()
    tracker = TurnTracker(observer, replies=True)
    stream(tracker, 40)
    tracker.output(VAD, 0.8, ended(500.0), 0.79)
    tracker.output(ASR, 1.0, transcript(500.0), 0.9)
    tracker.output(BOT, 1.4, ReplySentence("bot-t1", "Hi."))  # a duplex node: no call
    tracker.output(BOT, 1.6, Audio(np.zeros(10, np.float32), 16_000, metadata={"turn": "bot-t1"}))
    assert record.moments == [
        (1, "vad", "vad", 0.79, 0.8),  # told with the transcript that names its end
        (1, "transcribe", "asr", 0.9, 1.0),
        (1, "reply_text", "bot", None, 1.4),
        (1, "reply_audio", "bot", None, 1.6),
    ]
