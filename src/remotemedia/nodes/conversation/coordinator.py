"""``ConversationCoordinatorNode``: reply turns, and barge-in that cancels a reply mid-word.

The coordinator takes the user's side of a conversation (the VAD's per-chunk events
and Whisper's interim and final transcripts, on one input) and produces the other:
at each final transcript it starts a *reply turn* that asks the responder for a
reply, splits it into sentences, speaks each with Piper and sends the audio out paced
in real time (a little ahead of playback, ``playout_lead_ms``).

What one turn may ask for is bounded, because a voice's cost grows with the text it
is given at once (Piper took 2.7 GB and 18 s for 2,000 characters without
punctuation; it also cuts what it gives its model, see ``PiperTTSNode``):

- the user's turn (a transcript, or typed Text) longer than ``max_turn_chars`` is
  refused: that input is reported failed (a ``NodeError`` naming the limit; over
  gRPC a lost-input error) and the conversation goes on;
- of the reply, the first ``max_reply_chars`` are spoken, cut after a whole word; the
  responder is stopped there and ``{"turn", "truncated": true, "reply_chars",
  "limit"}`` says so (``reply_chars``: what the responder had sent by then);
- the reply goes to the voice in pieces of at most ``max_piece_chars``, cut at
  sentence ends and, within a long sentence, after the last word that fits.

The voice is a child node (:meth:`~remotemedia.nodes.Node.make_child`): on a server,
Piper runs in a worker process of its own, under the server's supervision (restarts,
``--worker-max-rss-mb``), so a long reply costs memory and time in a process of its
own, not in the server's, where the real-time sessions run (and their GIL).

Each turn is one Trio cancel scope around its two tasks (``llm``: the responder;
``audio``: synthesis and playout). When the user starts speaking during a turn (speech
for ``user_speech_debounce_ms``; or, with ``min_interruption_words``, once that many
words are heard), the scopes named by ``barge_in_targets`` are cancelled and
:class:`~remotemedia.events.Interrupted` (Json ``{"interrupted": true, "turn",
"spoken_ms", "targets"}``) goes out. Every output of a turn goes through one lock that
the interruption holds while it cancels and sends, so no audio of an interrupted turn
can follow its ``interrupted`` result (Trio's cancellation alone would not promise
that: a task already woken runs on to its next checkpoint). The interruption does not
wait for a synthesis in progress: in a worker, it finishes there and its audio is
dropped before the worker takes the next turn's first piece (in-process, the call runs
on in its thread). The client drops what it has not played yet.

Outputs, all on the coordinator's sink: the transcripts passed through (interim and
final), ``{"turn", "reply"}`` for each sentence as it starts to be spoken, the reply
audio (metadata ``turn``), ``{"interrupted": ...}``, ``{"turn", "truncated": ...}``,
``{"turn", "error"}`` (the responder failed) and ``{"turn_done", "spoken_ms",
"reply"}``. Each is an event of :mod:`remotemedia.events` (``ReplySentence``,
``Interrupted``, ``ReplyTruncated``, ``TurnFailed``, ``TurnDone``): a Json whose value is
that dict. The inputs are read as events too (``VoiceActivity``, ``InterimTranscript``,
``FinalTranscript``: any Json with a ``text`` string, such as a client's ``{"text"}``).
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from collections.abc import AsyncIterator

import attrs
import trio

from remotemedia.errors import ModelNotFoundError, RemoteMediaError
from remotemedia.events import (
    FinalTranscript,
    InterimTranscript,
    Interrupted,
    ReplySentence,
    ReplyTruncated,
    TurnDone,
    TurnFailed,
    VoiceActivity,
    event_of,
)
from remotemedia.media import Audio, Json, RuntimeData, Text
from remotemedia.nodes.asr.agreement import words_of
from remotemedia.nodes.base import Emit, Node
from remotemedia.nodes.conversation.responders import (
    Exchange,
    LoopbackResponder,
    NodeResponder,
    Responder,
)
from remotemedia.nodes.conversation.speakers import PiperSpeaker, Speaker
from remotemedia.nodes.text.collector import TextCollectorNode, TextCollectorParams
from remotemedia.nodes.text.openai_chat import (
    OpenAIChat,
    OpenAIChatNode,
    OpenAIChatParams,
    endpoint_from_environment,
)
from remotemedia.nodes.transformers.lfm2_text import LFM2TextNode, LFM2TextParams
from remotemedia.nodes.tts.piper import PiperTTSNode
from remotemedia.params import param

__all__ = ["ConversationCoordinatorNode", "CoordinatorParams", "Speaker"]

TARGETS = ("llm", "audio")
_SENTENCES_AHEAD = 2  # sentences the responder may run ahead of speech
_SENTENCE_END = r"[.!?;:\n]"


@attrs.frozen
class CoordinatorParams:
    """Parameters of :class:`ConversationCoordinatorNode`."""

    user_speech_debounce_ms: int = param(
        150,
        doc="Speech must last this long during a reply to count as the user starting to talk.",
        ge=0,
        le=5_000,
    )
    barge_in_targets: tuple[str, ...] = param(
        TARGETS, doc="What a barge-in cancels: 'llm' (the responder) and/or 'audio' (speech)."
    )
    min_interruption_words: int = param(
        0,
        doc="0: speech alone interrupts; N: only once N words of it are transcribed "
        "(coughs and 'mhm' do not interrupt; needs the accumulator's interims).",
        ge=0,
        le=20,
    )
    pause_then_decide_ms: int = param(
        0,
        doc="With min_interruption_words: pause the reply at the user's speech and resume "
        "it if no words come within this time (0: keep talking until words come).",
        ge=0,
        le=10_000,
    )
    speech_threshold: float = param(
        0.5, doc="VAD probability that counts as user speech.", ge=0.0, le=1.0
    )
    responder: str = param(
        "loopback",
        doc="Who replies: 'loopback' (says back what it heard), 'openai' (an "
        "OpenAI-compatible chat endpoint, set up by the server: see OpenAIChatNode) or "
        "'lfm2' (a local LFM2 chat model in a worker process: see LFM2TextNode).",
        choices=("loopback", "openai", "lfm2"),
    )
    lfm2_model: str | None = param(
        None,
        doc="With responder 'lfm2': the local LFM2 chat model folder.",
        server_path=True,
    )
    model: str = param("gpt-4o-mini", doc="With responder 'openai': the model.")
    system_prompt: str = param(
        OpenAIChatParams().system_prompt, doc="With responder 'openai': the system message."
    )
    min_sentence_length: int = param(
        2, doc="Shorter sentences of the reply are joined to the next.", ge=1, le=1_000
    )
    llm_silence_timeout_ms: int = param(
        45_000,
        doc="A responder silent this long ends its turn with an error.",
        ge=100,
        le=600_000,
    )
    history_turns: int = param(10, doc="Earlier turns given to the responder.", ge=0, le=100)
    rejoin_cut_turn_ms: int = param(
        1_000,
        doc="When the user cuts a reply within this much of its speech, their next words "
        "continue the turn that reply answered (a pause mid-sentence, not a new turn).",
        ge=0,
        le=10_000,
    )
    voice: str | None = param(
        None, doc="Piper voice (.onnx); default: en_US-joe-medium.", server_path=True
    )
    audio_chunk_ms: int = param(
        100, doc="Reply audio is sent in chunks this long.", ge=10, le=1_000
    )
    playout_lead_ms: int = param(
        200,
        doc="How far ahead of playback reply audio is sent (what a barge-in cannot recall).",
        ge=0,
        le=10_000,
    )
    max_turn_chars: int = param(
        2_000,
        doc="A user's turn (transcript or typed text) longer than this is refused: that "
        "input is reported failed, and the conversation goes on.",
        ge=1,
        le=1_000_000,
    )
    max_reply_chars: int = param(
        4_000,
        doc="Of a reply, this much is spoken (cut after a whole word); the responder is "
        "stopped there and a {turn, truncated} result says so.",
        ge=1,
        le=100_000,
    )
    max_piece_chars: int = param(
        300,
        doc="The reply goes to the voice in pieces at most this long, cut at sentence "
        "ends, else after a whole word (a voice's memory and delay grow with a piece).",
        ge=10,
        le=1_000,
    )

    def __attrs_post_init__(self) -> None:
        unknown = [t for t in self.barge_in_targets if t not in TARGETS]
        if unknown or not self.barge_in_targets:
            raise ValueError(
                f"barge_in_targets must name one or both of {list(TARGETS)}, "
                f"got {list(self.barge_in_targets)}"
            )
        if self.pause_then_decide_ms and not self.min_interruption_words:
            raise ValueError(
                "pause_then_decide_ms needs min_interruption_words: the pause waits for words"
            )


@attrs.define(eq=False)
class _Turn:
    """One reply turn: its scopes, and how much of its audio went out and was played."""

    id: str
    user: str
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    llm: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    audio: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    nursery: trio.Nursery | None = None
    interrupted: bool = False
    resumed: trio.Event | None = None  # set while the turn is paused
    sent_s: float = 0.0  # reply audio sent
    playhead: float | None = None  # Trio time at which the audio sent ends playing
    spoken: list[str] = attrs.field(factory=list)
    cut_ms: int | None = None  # how much of it had played when the user cut it
    exchange: Exchange | None = None  # its record in the history, once made

    def spoken_ms(self, now: float) -> int:
        """Audio played so far: what was sent, less what is still ahead of playback."""
        if self.playhead is None:
            return 0
        return round(max(0.0, self.sent_s - max(0.0, self.playhead - now)) * 1000)

    def pause(self) -> None:
        if self.resumed is None:
            self.resumed = trio.Event()

    def resume(self) -> None:
        if self.resumed is not None:
            self.resumed.set()
            self.resumed = None


class ConversationCoordinatorNode(Node[CoordinatorParams]):
    """Reply to each user turn with speech, and stop the reply when the user barges in.

    Connect the VAD (its per-chunk events) and Whisper (interim and final
    transcripts) to it; a Text input counts as something the user said (typed).
    See :mod:`remotemedia.nodes.conversation.coordinator`.
    """

    node_type = "ConversationCoordinatorNode"
    Params = CoordinatorParams
    accepts = frozenset({"json", "audio", "text"})
    produces = frozenset({"json", "audio"})

    def __init__(self, node_id: str, params: CoordinatorParams) -> None:
        super().__init__(node_id, params)
        self.speaker: Speaker = PiperSpeaker(self, params.voice)
        self.responder: Responder = LoopbackResponder()
        if params.responder == "openai":
            if (reason := OpenAIChatNode.unavailable()) is not None:
                raise ModelNotFoundError(f"responder 'openai' {reason}")
            chat = OpenAIChatParams(
                model=params.model,
                system_prompt=params.system_prompt,
                history_turns=params.history_turns,
            )
            self.responder = OpenAIChat(chat, *endpoint_from_environment())
        self.history: deque[Exchange] = deque(maxlen=params.history_turns)
        self._turn: _Turn | None = None
        self._cut: _Turn | None = None  # the turn the user last cut, until their next words
        self._turns = 0
        self._speech_from: float | None = None  # stream ms the user's speech began
        self._user_speaking = False
        self._lock = trio.Lock()  # every output of a turn, and interruptions, hold it
        self._emit: Emit | None = None
        self._draining = False  # input ended: nobody can interrupt, so no pacing

    @classmethod
    def unavailable(cls) -> str | None:
        """Why the node cannot run here (None when it can)."""
        return PiperTTSNode.unavailable()

    async def initialize(self) -> None:
        """Load the voice (and, with responder 'lfm2', the chat model)."""
        if self.params.responder == "lfm2":
            chat = LFM2TextParams(
                model=self.params.lfm2_model,
                system_prompt=self.params.system_prompt,
                history_turns=self.params.history_turns,
            )
            model = self.make_child("llm", LFM2TextNode, chat)
            self.responder = NodeResponder(model)
            await model.initialize()
        await self.speaker.initialize()

    async def cleanup(self) -> None:
        """Release the voice (and the chat endpoint's connections, or the chat model)."""
        await self.speaker.cleanup()
        if isinstance(self.responder, OpenAIChat):
            await self.responder.aclose()
        if isinstance(self.responder, NodeResponder):
            await self.responder.node.cleanup()

    async def run(self, inputs: AsyncIterator[RuntimeData], emit: Emit) -> None:
        """Follow the user's side; run reply turns in a nursery of their own."""
        self._emit = emit
        async with trio.open_nursery() as nursery:
            async for data in inputs:
                if isinstance(data, Json):
                    await self._on_event(data, nursery)
                elif isinstance(data, Text):  # typed, not spoken: a final transcript
                    await self._on_final(data.text.strip(), nursery)
            # The user is done: the last reply goes out without pacing.
            self._draining = True
            if self._turn is not None:
                self._turn.resume()

    async def _on_event(self, data: Json, nursery: trio.Nursery) -> None:
        """Follow the VAD's reports; pass the transcripts through and act on them."""
        event = event_of(data)
        if isinstance(event, VoiceActivity):
            await self._on_vad(event)
        elif isinstance(event, InterimTranscript):
            await self._send(event)
            await self._on_words(len(words_of(f"{event.stable} {event.unstable}")))
        elif isinstance(event, FinalTranscript):
            await self._send(event)
            await self._on_final(event.text.strip(), nursery)

    async def _on_vad(self, report: VoiceActivity) -> None:
        """Debounce the VAD's speech probability into 'the user started talking'."""
        probability, now_ms = report.probability, report.timestamp_ms
        if probability is None or now_ms is None:
            return  # a report of transitions only: nothing to debounce
        threshold = self.params.speech_threshold
        if probability >= threshold:
            if self._speech_from is None:
                rate = report.sample_rate or 16_000
                self._speech_from = now_ms - 1000 * (report.samples or 0) / rate
            speech_ms = now_ms - self._speech_from
            if not self._user_speaking and speech_ms >= self.params.user_speech_debounce_ms:
                self._user_speaking = True
                await self._user_started()
        elif probability < max(threshold - 0.15, 0.0):
            self._speech_from, self._user_speaking = None, False

    async def _user_started(self) -> None:
        turn = self._turn
        if turn is None or turn.interrupted:
            return
        params = self.params
        if not params.min_interruption_words:
            await self._interrupt(turn)
        elif params.pause_then_decide_ms and turn.nursery is not None:
            turn.pause()
            turn.nursery.start_soon(self._decide, turn)

    async def _decide(self, turn: _Turn) -> None:
        """Paused for the user's speech: resume unless words came in time."""
        await trio.sleep(self.params.pause_then_decide_ms / 1000)
        if not turn.interrupted:
            self.count("barge_in_resumed")
            turn.resume()

    async def _on_words(self, count: int) -> None:
        turn, needed = self._turn, self.params.min_interruption_words
        if turn is not None and not turn.interrupted and needed and count >= needed:
            await self._interrupt(turn)

    async def _on_final(self, text: str, nursery: trio.Nursery) -> None:
        turn = self._turn
        if not text:
            return
        if len(text) > (limit := self.params.max_turn_chars):
            # Refused, not cut: a reply to the start of what was said would answer
            # something the user did not ask. Nothing else changes (no interruption).
            self.count("turn_refused")
            await self.input_failed(
                f"the user's turn is {len(text):,} characters long, more than "
                f"max_turn_chars ({limit:,}); send less, or raise the coordinator's "
                "max_turn_chars"
            )
            return
        if turn is not None and not turn.interrupted:
            needed = self.params.min_interruption_words
            if needed and len(words_of(text)) < needed:
                return  # a backchannel ("mhm") during the reply: no new turn
            await self._interrupt(turn)
        cut, self._cut = self._cut, None
        if (
            cut is not None
            and cut.cut_ms is not None
            and cut.cut_ms < self.params.rejoin_cut_turn_ms
        ):
            # Barely a word of that reply was heard: the user had not finished.
            text = f"{cut.user} {text}"
            if cut.exchange is not None and cut.exchange in self.history:
                self.history.remove(cut.exchange)
            self.count("turn_rejoined")
        self._turns += 1
        turn = _Turn(f"{self.node_id}-t{self._turns}", text)
        self._turn = turn
        self.count("turn_started")
        nursery.start_soon(self._run_turn, turn)

    async def _interrupt(self, turn: _Turn) -> None:
        """Cancel the turn's targets, then say so: nothing of the turn follows."""
        async with self._lock:
            if turn.interrupted:
                return
            turn.interrupted = True
            targets = self.params.barge_in_targets
            if set(targets) == set(TARGETS):
                turn.scope.cancel()
            else:
                for target in targets:
                    getattr(turn, target).cancel()
            turn.resume()
            self.count("barge_in")
            spoken = turn.spoken_ms(trio.current_time())
            if "audio" in targets:  # its speech ends here: the history says so, now
                turn.cut_ms, self._cut = spoken, turn
                self._record(turn)
            await self._sent(Interrupted(turn.id, spoken, tuple(targets)))

    async def _run_turn(self, turn: _Turn) -> None:
        with turn.scope:
            async with trio.open_nursery() as nursery:
                turn.nursery = nursery
                send, receive = trio.open_memory_channel[str](_SENTENCES_AHEAD)
                nursery.start_soon(self._generate, turn, send)
                await self._speak(turn, receive)
        reply = self._record(turn).reply
        if self._turn is turn:
            self._turn = None
        if not turn.interrupted:
            spoken = turn.spoken_ms(math.inf)
            await self._send(TurnDone(turn.id, spoken, reply))

    def _record(self, turn: _Turn) -> Exchange:
        """Put the turn in the history (once), with the sentences of its reply that went out."""
        if turn.exchange is None:
            turn.exchange = Exchange(turn.user, " ".join(turn.spoken), turn.interrupted)
            self.history.append(turn.exchange)
        return turn.exchange

    async def _generate(self, turn: _Turn, sentences: trio.MemorySendChannel[str]) -> None:
        """The responder's reply, split into pieces to speak (the ``llm`` part of the turn).

        Only the first ``max_reply_chars`` of the reply are taken; the responder is
        stopped there (closed: a chat endpoint stops generating) and the turn says so.
        """
        # A colon ends a piece too: "You said:" is spoken while the rest is synthesised,
        # so the reply starts sooner (Piper speaks a piece only once it is complete).
        splitter = TextCollectorNode(
            f"{self.node_id}.sentences",
            TextCollectorParams(
                split_pattern=_SENTENCE_END,
                min_sentence_length=self.params.min_sentence_length,
                max_sentence_length=self.params.max_piece_chars,
            ),
        )
        timeout = self.params.llm_silence_timeout_ms / 1000
        limit, received = self.params.max_reply_chars, 0
        reply = self.responder.reply(turn.user, list(self.history))
        async with sentences, contextlib.aclosing(reply) as pieces:
            with turn.llm:
                try:
                    while received <= limit:
                        with trio.fail_after(timeout):
                            piece = await pieces.__anext__()
                        received += len(piece)
                        if received > limit:  # said first: before what is kept is spoken
                            piece = _first_words(piece, len(piece) - (received - limit))
                            await self._truncated(turn, received)
                        for sentence in splitter.process(Text(piece)):
                            assert isinstance(sentence, Text)
                            await sentences.send(sentence.text)
                except StopAsyncIteration:
                    pass
                except (trio.TooSlowError, RemoteMediaError, OSError) as exc:
                    reason = (
                        f"the responder sent nothing for {timeout:g} s"
                        if isinstance(exc, trio.TooSlowError)
                        else str(exc)
                    )
                    self.count("responder_failed")
                    await self._send(TurnFailed(turn.id, reason))
                    return
                for sentence in splitter.flush():
                    assert isinstance(sentence, Text)
                    await sentences.send(sentence.text)

    async def _truncated(self, turn: _Turn, received: int) -> None:
        """Say that the turn's reply is cut at ``max_reply_chars`` (``received`` so far)."""
        self.count("reply_truncated")
        await self._send(ReplyTruncated(turn.id, received, self.params.max_reply_chars))

    async def _speak(self, turn: _Turn, sentences: trio.MemoryReceiveChannel[str]) -> None:
        """Synthesise each sentence and play it out (the ``audio`` part of the turn)."""
        step_s = self.params.audio_chunk_ms / 1000
        async with sentences:
            with turn.audio:
                async for sentence in sentences:
                    await self._send(ReplySentence(turn.id, sentence), turn)
                    async with contextlib.aclosing(self.speaker.speak(sentence)) as voice:
                        async for audio in voice:
                            frames = max(1, round(step_s * audio.sample_rate))
                            for start in range(0, audio.num_frames, frames):
                                await self._play(turn, _slice(audio, start, frames, turn.id))
                    turn.spoken.append(sentence)

    async def _play(self, turn: _Turn, chunk: Audio) -> None:
        """Send one chunk of reply audio when playback is ``playout_lead_ms`` from it."""
        while turn.resumed is not None and not self._draining:
            await turn.resumed.wait()
        if turn.playhead is None or turn.playhead < trio.current_time():
            turn.playhead = trio.current_time()
        if not self._draining:
            await trio.sleep_until(turn.playhead - self.params.playout_lead_ms / 1000)
        if await self._send(chunk, turn):
            seconds = chunk.num_frames / chunk.sample_rate
            turn.sent_s += seconds
            turn.playhead = max(turn.playhead, trio.current_time()) + seconds

    async def _send(self, data: RuntimeData, turn: _Turn | None = None) -> bool:
        """Send an output; one of ``turn`` only if the turn's audio was not interrupted."""
        async with self._lock:
            if turn is not None and turn.interrupted and "audio" in self.params.barge_in_targets:
                return False
            await self._sent(data)
            return True

    async def _sent(self, data: RuntimeData) -> None:
        assert self._emit is not None
        await self._emit(data)


def _first_words(text: str, room: int) -> str:
    """The start of ``text`` (a piece of a reply) that fits in ``room``, up to a whitespace.

    The words of it that fit whole; a word cut by the limit is left out (one begun in
    an earlier piece keeps what went before).
    """
    for index in range(min(room, len(text) - 1), -1, -1):
        if text[index].isspace():
            return text[:index]
    return ""


def _slice(audio: Audio, start: int, frames: int, turn: str) -> Audio:
    channels = audio.channels
    samples = audio.samples[start * channels : (start + frames) * channels]
    return Audio(samples, audio.sample_rate, channels, metadata={"turn": turn})
