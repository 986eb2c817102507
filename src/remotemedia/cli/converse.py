"""``remotemedia demo --converse``: a scripted user talks to ``converse`` and interrupts it.

Starts ``remotemedia serve``, opens the bundled ``converse`` pipeline over gRPC and
plays a user through a live microphone (20 ms chunks, each sent once its audio has
passed): the user asks something, lets the reply (Piper, saying back what it heard)
play for a moment, talks over it, then listens to the second reply to its end. The
timeline shows each step: the user's speech, its transcript, the reply starting,
the barge-in, the reply cut, and checks that no audio of the interrupted reply
arrived after its ``interrupted`` result.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import numpy as np
import trio

from remotemedia.cli.local_server import local_server
from remotemedia.client import open_trio_client
from remotemedia.media import Audio, Json
from remotemedia.session import Result
from remotemedia.testing import synthesize_speech

__all__ = ["Conversation", "converse", "run_converse_demo"]

QUESTION = "Could you tell me what the weather will be like in Paris tomorrow afternoon?"
INTERRUPTION = "Sorry, I meant London."
TALK_OVER_AFTER_S = 1.2  # the user lets the first reply play this long
_CHUNK_S = 0.020
_WAIT_S = 30.0  # for a transcript or a reply, at most


@attrs.define
class Conversation:
    """What happened, in seconds of stream time (from the first chunk sent).

    Attributes:
        timeline: (time, what) lines, in order.
        speech: (start, end) of each thing the user said.
        replies: Turn id -> time its first audio arrived.
        done: Turn ids whose reply was spoken to the end.
        interrupted: (time, the result's value) of each ``interrupted`` result.
        late_audio: Audio chunks of an interrupted turn that arrived after its
            ``interrupted`` result (must be 0).
        reply_audio: Audio chunks of replies received.
        interims: Interim transcripts received (shown while the user spoke).
    """

    timeline: list[tuple[float, str]] = attrs.field(factory=list)
    speech: list[tuple[float, float]] = attrs.field(factory=list)
    replies: dict[str, float] = attrs.field(factory=dict)
    done: list[str] = attrs.field(factory=list)
    interrupted: list[tuple[float, dict[str, object]]] = attrs.field(factory=list)
    late_audio: int = 0
    reply_audio: int = 0
    interims: int = 0
    _turn: str | None = None  # the turn the audio now arriving belongs to
    _cut: set[str] = attrs.field(factory=set)

    def note(self, when: float, what: str) -> None:
        """Add a line to the timeline."""
        self.timeline.append((when, what))

    def take(self, when: float, result: Result) -> None:
        """Account for one result from the coordinator."""
        data = result.data
        if isinstance(data, Audio):
            self.reply_audio += 1
            if self._turn is not None:
                self.replies.setdefault(self._turn, when)
                if self._turn in self._cut:
                    self.late_audio += 1
            return
        if not isinstance(data, Json):
            return
        value = data.value
        if value.get("interim"):
            if not self.interims:
                self.note(
                    when,
                    f"first interim transcript: {value.get('stable', '')!r} + "
                    f"{value.get('unstable', '')!r}",
                )
            self.interims += 1
            return
        if "reply" in value and "turn" in value:
            self._turn = str(value["turn"])
            self.note(when, f"reply {self._turn}: {value['reply']!r}")
        elif value.get("interrupted"):
            turn = str(value["turn"])
            self._cut.add(turn)
            self.interrupted.append((when, dict(value)))
            self.note(when, f"interrupted {turn} after {value['spoken_ms']} ms of its speech")
        elif "turn_done" in value:
            self.done.append(str(value["turn_done"]))
            self.note(when, f"reply {value['turn_done']} spoken to its end")
        elif "error" in value:
            self.note(when, f"error: {value['error']}")
        elif isinstance(value.get("text"), str):
            self.note(when, f"transcript: {value['text']!r}")


class _Microphone:
    """Sends 20 ms chunks in real time: the user's speech when there is some, else silence."""

    def __init__(self, stream: object, rate: int) -> None:
        self._stream = stream
        self._rate = rate
        self._step = round(rate * _CHUNK_S)
        self._begin = trio.current_time()
        self._sent = 0

    @property
    def now(self) -> float:
        """Seconds of audio sent so far (stream time)."""
        return self._sent * _CHUNK_S

    async def _send(self, samples: np.ndarray) -> None:
        await trio.sleep_until(self._begin + (self._sent + 1) * _CHUNK_S)
        chunk = np.zeros(self._step, np.float32)
        chunk[: samples.size] = samples
        await self._stream.send(Audio(chunk, self._rate), sequence=self._sent)  # type: ignore[attr-defined]
        self._sent += 1

    async def say(self, samples: np.ndarray) -> tuple[float, float]:
        """Send speech; return its (start, end) in stream time."""
        start = self.now
        for offset in range(0, samples.size, self._step):
            await self._send(samples[offset : offset + self._step])
        return start, start + samples.size / self._rate

    async def silence(self, seconds: float) -> None:
        """Send silence for ``seconds``."""
        for _ in range(round(seconds / _CHUNK_S)):
            await self._send(np.zeros(0, np.float32))

    async def silence_until(self, done: Callable[[float], bool], what: str) -> None:
        """Send silence until ``done(now)`` holds (checked once a chunk)."""
        waited = 0.0
        while not done(self.now):
            if waited > _WAIT_S:
                raise TimeoutError(f"no {what} within {_WAIT_S:g} s")
            await self._send(np.zeros(0, np.float32))
            waited += _CHUNK_S


async def converse(address: str, *, token: str | None = None) -> Conversation:
    """Play the scripted user against the server at ``address``; return what happened."""
    lines = await trio.to_thread.run_sync(_speech, (QUESTION, INTERRUPTION))
    rate = lines[0][0]
    talk = Conversation()
    async with (
        open_trio_client(address, token=token) as client,
        client.stream("converse") as stream,
    ):
        mic = _Microphone(stream, rate)

        async def user() -> None:
            await mic.silence(0.5)
            for text, (_, samples) in zip((QUESTION, INTERRUPTION), lines, strict=True):
                talk.note(mic.now, f"user says {text!r}")
                start, end = await mic.say(samples)
                talk.speech.append((start, end))
                talk.note(end, "user stops")
                if text is QUESTION:
                    await mic.silence_until(
                        lambda now: (
                            "coordinator-t1" in talk.replies
                            and now - talk.replies["coordinator-t1"] >= TALK_OVER_AFTER_S
                        ),
                        "reply",
                    )
            await mic.silence_until(lambda now: bool(talk.done), "second reply")
            await mic.silence(0.3)
            await stream.close()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(user)
            async for result in stream:
                talk.take(mic.now, result)
    talk.timeline.sort(key=lambda line: line[0])
    return talk


def _speech(texts: tuple[str, ...]) -> list[tuple[int, np.ndarray]]:
    """Each text as Piper speech, trimmed to its audible part: (rate, samples)."""
    out = []
    for text in texts:
        sample = synthesize_speech((text,), lead_s=0.0, tail_s=0.0)
        rate = sample.audio.sample_rate
        (segment,) = sample.segments
        start, end = (int(ms * rate / 1000) for ms in (segment.start_ms, segment.end_ms))
        out.append((rate, np.ascontiguousarray(sample.audio.samples[start:end])))
    return out


def run_converse_demo() -> int:
    """Run the conversation demo; 0 when the reply was cut and none of it came after."""
    return trio.run(_demo)


async def _demo() -> int:
    async with local_server() as address:
        print(
            "A scripted user talks to the bundled 'converse' pipeline (VAD -> Whisper with "
            "interims -> coordinator -> Piper) in real time, and interrupts its first reply:",
            flush=True,
        )
        talk = await converse(address)
    return _report(talk)


def _report(talk: Conversation) -> int:
    print()
    for when, what in talk.timeline:
        print(f"  {when:6.2f} s  {what}")
    print()
    ok = bool(talk.interrupted) and talk.late_audio == 0 and bool(talk.done)
    if talk.interrupted and len(talk.speech) > 1:
        when, value = talk.interrupted[0]
        barge = talk.speech[1][0]
        print(
            f"The user started talking over the reply at {barge:.2f} s; the reply was cut "
            f"{(when - barge) * 1000:.0f} ms later, after {value['spoken_ms']} ms of it had "
            f"played. Audio of the cut reply after that: {talk.late_audio} chunks."
        )
    print(f"Interim transcripts while the user spoke: {talk.interims}.")
    if talk.speech and "coordinator-t1" in talk.replies:
        first = talk.replies["coordinator-t1"] - talk.speech[0][1]
        print(f"End of the question -> first reply audio: {first * 1000:.0f} ms.")
    print("OK" if ok else "FAILED: the reply was not cut cleanly")
    return 0 if ok else 1
