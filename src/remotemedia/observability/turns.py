"""Where a turn's time went: per-turn latency, stage by stage (sans-IO).

A session hands a :class:`TurnTracker` the arrival of its input audio and the outputs
of the nodes that speak about turns (the VAD's reports, the accumulator's utterances,
transcripts, reply text and audio, interruptions). The tracker puts each in its turn,
and when a turn is over it hands the finished :class:`Turn` to its observer, which
turns it into metrics and a log line (one record, so the two always agree).

A turn's stages, each from the one before, so they add up to "end of speech → first
reply audio" (a pipeline that does not reply stops at ``transcribe``):

===============  ==============================================================
``vad``          end of speech, where the VAD placed it → the VAD's report of it
``transcribe``   that report → the final transcript (``speculation``: ``hit``,
                 the end committed a speculation, whose transcript was ready unless
                 its worker was lost meanwhile; ``miss``, speech went on after the
                 speculation, so the end was transcribed anew; ``off``, none was made)
``reply_text``   the transcript → the first text of the reply
``reply_audio``  the first text → the first audio of the reply
``interrupt``    the user's speech start → ``interrupted`` (barge-in; not in the sum)
===============  ==============================================================

and the totals a user waits, from the end of speech: until the transcript, the first
reply text, the first reply audio.

Rules the tracker keeps:

1. Times are the caller's clock (a session passes ``trio.current_time()``). Stream
   time (the milliseconds of audio the VAD and the accumulator report) becomes the
   caller's clock through the arrival of the input audio that holds it: speech that
   ended at stream time 2,340 ms ended when the chunk holding 2,340 ms arrived. Audio
   older than the :data:`REMEMBERED_CHUNKS` latest chunks has no time (a stage that
   needs it is left out, never guessed).
2. A transcript is matched to the VAD report of *its* end (by the end's stream time),
   not to the latest one, so two utterances in flight are each measured from their
   own end. A transcript seen twice (the coordinator passes Whisper's on) counts once.
3. A reply belongs to the oldest transcribed turn without one; reply events that name
   their turn (the coordinator's) follow it by that name. Typed text that starts a
   reply makes a turn without speech times.
4. A turn ends at ``turn_done``, ``interrupted`` or a reply error; in a pipeline that
   does not reply, at its transcript; otherwise when a newer turn is transcribed or
   the session ends (:meth:`TurnTracker.finish`). Every turn ends exactly once.
5. Memory is bounded: at most :data:`OPEN_TURNS` turns are open (the oldest is ended
   as ``unanswered``) and the stream clock keeps :data:`REMEMBERED_CHUNKS` entries.
6. Work thrown away is counted as it is thrown away: a cancelled speculation
   (``speculation``), a reply cut by the user (``reply``).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Protocol

import attrs

from remotemedia.events import (
    FinalTranscript,
    Interrupted,
    ReplyPiece,
    ReplySentence,
    SpeechEnded,
    SpeechStarted,
    TurnDone,
    TurnFailed,
    VoiceActivity,
    event_of,
)
from remotemedia.media import INTERIM, Audio, Control, Json, RuntimeData, Text

__all__ = [
    "OPEN_TURNS",
    "REMEMBERED_CHUNKS",
    "STAGES",
    "TOTALS",
    "NodeRole",
    "Turn",
    "TurnObserver",
    "TurnTracker",
    "Watch",
    "roles_watched",
]

STAGES = ("vad", "transcribe", "reply_text", "reply_audio", "interrupt")
"""The stages of a turn, in order (``interrupt`` is not part of the sum)."""
TOTALS = ("transcript", "reply_text", "reply_audio")
"""What a user waits for, each measured from the end of speech."""

REMEMBERED_CHUNKS = 4096
"""Input chunks whose arrival the stream clock keeps (82 s of 20 ms chunks)."""
OPEN_TURNS = 8
"""Turns open at once; beyond it, the oldest ends as ``unanswered``."""
_ENDS = 16  # VAD end reports kept for matching transcripts to their end

_CANCEL_SPECULATION = "cancel_speculation"


@attrs.frozen
class NodeRole:
    """What a node's outputs can say about turns, from what its type declares.

    Attributes:
        node_id: The node.
        node_type: Its type (the metrics' ``node_type`` label).
        voice: It turns text into audio: its audio is reply audio.
    """

    node_id: str
    node_type: str
    voice: bool = False


@attrs.define
class Turn:
    """One turn of a session: the user's utterance (or typed text) and the reply to it.

    Times are the tracker's clock; None where the turn has no such moment.

    Attributes:
        index: 1 for the session's first turn, then 2, ...
        speech_end: When the user's speech ended (rule 1).
        decided: When the VAD reported that end.
        transcribed: When the final transcript came.
        reply_text: When the first text of the reply came.
        reply_audio: When the first audio of the reply came.
        speech_start: When the user started the speech that interrupted the reply.
        interrupted: When ``interrupted`` came.
        ended: When the turn ended.
        speculation: ``hit``, ``miss`` or ``off`` (see the module's table).
        outcome: ``transcribed`` (no reply expected), ``replied``, ``interrupted``,
            ``failed``, ``unanswered`` (no reply came), or ``open``.
        reply: The reply's turn id, if its events named one.
        user_chars: Characters the user said (the transcript's length; not its text).
        spoken_ms: Audio of the reply played, if the reply said so.
        node_types: Which node type ended each stage, by stage.
    """

    index: int
    speech_end: float | None = None
    decided: float | None = None
    transcribed: float | None = None
    reply_text: float | None = None
    reply_audio: float | None = None
    speech_start: float | None = None
    interrupted: float | None = None
    ended: float | None = None
    speculation: str = "off"
    outcome: str = "open"
    reply: str | None = None
    user_chars: int | None = None
    spoken_ms: int | None = None
    node_types: dict[str, str] = attrs.field(factory=dict)

    def stages(self) -> dict[str, float]:
        """Seconds of each stage this turn went through, in :data:`STAGES` order."""
        spans = {
            "vad": (self.speech_end, self.decided),
            "transcribe": (self.decided, self.transcribed),
            "reply_text": (self.transcribed, self.reply_text),
            "reply_audio": (self.reply_text, self.reply_audio),
            "interrupt": (self.speech_start, self.interrupted),
        }
        return {
            stage: max(0.0, end - start)
            for stage, (start, end) in spans.items()
            if start is not None and end is not None
        }

    def totals(self) -> dict[str, float]:
        """Seconds from the end of speech until each of :data:`TOTALS` this turn reached."""
        if self.speech_end is None:
            return {}
        moments = {
            "transcript": self.transcribed,
            "reply_text": self.reply_text,
            "reply_audio": self.reply_audio,
        }
        return {
            until: max(0.0, at - self.speech_end) for until, at in moments.items() if at is not None
        }


class TurnObserver(Protocol):
    """What a tracker tells: the moments of turns as they come, finished turns, waste."""

    def moment(
        self, turn: Turn, stage: str, role: NodeRole, started: float | None, at: float
    ) -> None:
        """``turn`` reached the end of ``stage`` at ``at``, by an output of ``role``'s node.

        ``started``: when that node began the call that made the output (None: no
        call, a duplex node's own task). A ``vad`` moment comes with its turn's
        ``transcribe`` moment, when the transcript names the end the VAD reported.
        """

    def turn_ended(self, turn: Turn) -> None:
        """``turn`` is over (its times are final)."""

    def wasted(self, kind: str) -> None:
        """Work of ``kind`` (``speculation``, ``reply``) was thrown away."""


class TurnTracker:
    """Follows one session's turns (see the module's rules).

    Args:
        observer: Told of each finished turn and of wasted work.
        replies: The pipeline replies (a node takes text): a turn stays open after
            its transcript until its reply is over.
    """

    def __init__(self, observer: TurnObserver, *, replies: bool) -> None:
        self._observer = observer
        self._replies = replies
        self._stream_ms = 0.0
        self._forgotten_ms = -1.0
        self._arrivals: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=REMEMBERED_CHUNKS
        )  # (stream ms at the chunk's end, arrival), oldest first
        # (stream ms, when reported, the VAD, its call's start) of the VAD's latest end reports
        self._ends: collections.deque[tuple[float, float, NodeRole, float | None]] = (
            collections.deque(maxlen=_ENDS)
        )
        self._vad: tuple[NodeRole, float | None] | None = None  # the end matched last
        self._speech_start: float | None = None
        self._speculations: dict[str, str] = {}  # utterance -> "started" | "hit" | "miss"
        self._open: list[Turn] = []  # oldest first
        self._by_reply: dict[str, Turn] = {}
        self._transcriber: str | None = None
        self._transcripts: collections.deque[tuple[object, ...]] = collections.deque(
            maxlen=OPEN_TURNS
        )
        self._text_replies = False  # a reply had text: audio waits for its turn's text
        self._turns = 0

    # --- input -----------------------------------------------------------------------

    def audio_in(self, now: float, seconds: float) -> None:
        """``seconds`` of input audio arrived at ``now`` (the stream clock, rule 1)."""
        self._stream_ms += seconds * 1000.0
        arrivals = self._arrivals
        if len(arrivals) == REMEMBERED_CHUNKS:
            self._forgotten_ms = arrivals[0][0]  # audio up to here has no time any more
        arrivals.append((self._stream_ms, now))

    def arrival(self, stream_ms: float) -> float | None:
        """When the input audio at ``stream_ms`` arrived; None if not remembered (rule 1)."""
        if stream_ms <= self._forgotten_ms:
            return None
        found = None
        for end_ms, arrived in reversed(self._arrivals):
            if end_ms < stream_ms:
                break
            found = arrived
        if found is None and self._arrivals and stream_ms > self._stream_ms:
            return self._arrivals[-1][1]  # past the last chunk (rounding): its arrival
        return found

    # --- node outputs ----------------------------------------------------------------

    def output(self, role: NodeRole, now: float, data: RuntimeData, started: float = -1.0) -> None:
        """A node of ``role`` emitted ``data`` at ``now``, in a call it began at ``started``.

        ``started`` is -1.0 when the node has no calls (a duplex node).
        """
        call = started if started >= 0 else None
        kind = type(data)
        if kind is Audio:
            assert isinstance(data, Audio)
            self._audio(role, now, data, call)
        elif kind is Control:
            assert isinstance(data, Control)
            if data.kind == _CANCEL_SPECULATION:
                self._observer.wasted("speculation")
        elif kind is Text:
            if role.node_id != self._transcriber:  # Whisper's emit_text is no reply
                self._replied_text(role, now, None, call)
        elif isinstance(data, Json):
            self._event(role, now, data, call)

    def _audio(self, role: NodeRole, now: float, audio: Audio, call: float | None) -> None:
        metadata = audio.metadata
        if not metadata:
            if role.voice:
                self._replied_audio(role, now, None, call)
            return
        turn = metadata.get("turn")
        if isinstance(turn, str):
            self._replied_audio(role, now, turn, call)
            return
        utterance = metadata.get("utterance")
        if not isinstance(utterance, str) or INTERIM in metadata:
            if role.voice:
                self._replied_audio(role, now, None, call)
            return
        # The accumulator's cut of an utterance: a speculation, its commit, or the final.
        speculations = self._speculations
        if "speculation" in metadata:
            speculations[utterance] = "started"
        elif "commits" in metadata:
            speculations[utterance] = "hit"
        elif utterance in speculations:
            speculations[utterance] = "miss"
        while len(speculations) > OPEN_TURNS:
            del speculations[next(iter(speculations))]

    def _event(self, role: NodeRole, now: float, data: Json, call: float | None) -> None:
        event = event_of(data)
        if isinstance(event, VoiceActivity):
            for transition in event.transitions:
                if isinstance(transition, SpeechEnded):
                    self._ends.append((transition.ms, now, role, call))
                elif isinstance(transition, SpeechStarted):
                    self._speech_start = self.arrival(transition.ms)
        elif isinstance(event, FinalTranscript):
            self._transcribed(role, now, event, call)
        elif isinstance(event, ReplySentence):
            self._replied_text(role, now, event.turn, call)
        elif isinstance(event, ReplyPiece):
            self._replied_text(role, now, None, call)
        elif isinstance(event, Interrupted):
            turn = self._named(event.turn, now)
            turn.speech_start = self._speech_start
            turn.interrupted = now
            turn.node_types["interrupt"] = role.node_type
            turn.spoken_ms = event.spoken_ms
            self._observer.moment(turn, "interrupt", role, call, now)
            self._observer.wasted("reply")
            self._end(turn, now, "interrupted")
        elif isinstance(event, TurnDone):
            turn = self._named(event.turn, now)
            turn.spoken_ms = event.spoken_ms
            self._end(turn, now, "replied")
        elif isinstance(event, TurnFailed):
            self._end(self._named(event.turn, now), now, "failed")

    # --- the turn's moments ----------------------------------------------------------

    def _transcribed(
        self, role: NodeRole, now: float, transcript: FinalTranscript, call: float | None
    ) -> None:
        key = (transcript.utterance, transcript.end_ms, transcript.text)
        if key in self._transcripts:
            return  # passed on by another node (rule 2)
        self._transcripts.append(key)
        for turn in list(self._open):
            if turn.reply is None:  # a newer turn: an unnamed reply is over (rule 4)
                self._end(turn, now, "replied" if turn.reply_text is not None else "unanswered")
        self._transcriber = role.node_id
        turn = self._new_turn(now)
        turn.transcribed = now
        turn.user_chars = len(transcript.text)
        turn.node_types["transcribe"] = role.node_type
        if transcript.end_ms is not None:
            turn.speech_end = self.arrival(transcript.end_ms)
            turn.decided = self._decided(turn, transcript.end_ms)
        if transcript.utterance is not None:
            result = self._speculations.pop(transcript.utterance, "off")
            turn.speculation = result if result in ("hit", "miss") else "off"
        if self._vad is not None and turn.decided is not None:
            vad_role, vad_call = self._vad
            self._observer.moment(turn, "vad", vad_role, vad_call, turn.decided)
        self._observer.moment(turn, "transcribe", role, call, now)
        if not self._replies:
            self._end(turn, now, "transcribed")

    def _decided(self, turn: Turn, end_ms: float) -> float | None:
        """When the VAD reported the end at ``end_ms`` (rule 2); None if it did not."""
        self._vad = None
        for ms, reported, role, call in reversed(self._ends):
            if abs(ms - end_ms) < 1.0:
                turn.node_types["vad"] = role.node_type
                self._vad = (role, call)
                return reported
        return None

    def _replied_text(
        self, role: NodeRole, now: float, reply: str | None, call: float | None
    ) -> None:
        turn = self._reply_turn(reply, now)
        if turn is not None and turn.reply_text is None:
            turn.reply_text = now
            turn.node_types["reply_text"] = role.node_type
            self._text_replies = True
            self._observer.moment(turn, "reply_text", role, call, now)

    def _replied_audio(
        self, role: NodeRole, now: float, reply: str | None, call: float | None
    ) -> None:
        turn = self._reply_turn(reply, now)
        if turn is None or turn.reply_audio is not None:
            return
        if reply is None and self._text_replies and turn.reply_text is None:
            return  # the previous reply's voice, still speaking: this one has no text yet
        turn.reply_audio = now
        turn.node_types["reply_audio"] = role.node_type
        self._observer.moment(turn, "reply_audio", role, call, now)

    def _reply_turn(self, reply: str | None, now: float) -> Turn | None:
        """The turn a reply event belongs to (rule 3), made if a named reply has none."""
        if reply is not None and (known := self._by_reply.get(reply)) is not None:
            return known
        waiting = (t for t in self._open if t.reply is None and t.transcribed is not None)
        turn = next(waiting, None)
        if reply is None:
            return turn  # an unnamed reply's text or audio with no turn: not a reply
        if turn is None:
            turn = self._new_turn(now)  # typed text: no speech times
        turn.reply = reply
        self._by_reply[reply] = turn
        return turn

    def _named(self, reply: str, now: float) -> Turn:
        turn = self._reply_turn(reply, now)
        assert turn is not None  # a named reply always has its turn
        return turn

    def _new_turn(self, now: float) -> Turn:
        self._turns += 1
        turn = Turn(self._turns)
        self._open.append(turn)
        if len(self._open) > OPEN_TURNS:
            oldest = self._open[0]
            self._end(oldest, now, "replied" if oldest.reply_text is not None else "unanswered")
        return turn

    def _end(self, turn: Turn, now: float, outcome: str) -> None:
        if turn.outcome != "open":
            return  # rule 4: once
        turn.outcome = outcome
        turn.ended = now
        self._open.remove(turn)
        if turn.reply is not None:
            self._by_reply.pop(turn.reply, None)
        self._observer.turn_ended(turn)

    def finish(self, now: float) -> None:
        """The session is over: end every open turn (a reply still missing: ``unanswered``)."""
        for turn in list(self._open):
            self._end(turn, now, "unanswered" if turn.reply_text is None else "replied")

    @property
    def open_turns(self) -> list[Turn]:
        """The turns not yet over, oldest first (live objects; read, do not modify)."""
        return list(self._open)


def roles_watched(
    nodes: dict[str, tuple[str, frozenset[str], frozenset[str]]],
    any_kind: frozenset[str],
) -> tuple[dict[str, NodeRole], bool]:
    """Which nodes a tracker must watch, and whether the pipeline replies.

    Args:
        nodes: By node id: its type, and the kinds it accepts and produces.
        any_kind: The kinds set that means "declares nothing" (``Node.produces``'s default).

    A node is watched when it declares what it produces and that can be an event or a
    control (JSON, control) or reply text, or it is a voice (takes text, makes audio):
    a resampler or a pass-through never is, so they add nothing to the hot loop.
    """
    roles = {}
    replies = False
    for node_id, (node_type, accepts, produces) in nodes.items():
        takes_text = "text" in accepts and accepts is not any_kind
        replies = replies or takes_text
        if produces is any_kind:
            continue
        voice = takes_text and "audio" in produces
        if voice or produces & {"json", "control", "text"}:
            roles[node_id] = NodeRole(node_id, node_type, voice=voice)
    return roles, replies


Watch = Callable[[float, RuntimeData, float], None]
"""A watched node's hook: ``(now, output, when the node began the call that made it)``."""
