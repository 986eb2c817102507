"""Typed events between the nodes of a conversation, and their wire form (sans-IO).

The VAD, Smart Turn, Whisper, the accumulator and the conversation coordinator
exchange these events instead of dicts told apart by their keys; a node dispatches
on the event's type. Every event *is* a :class:`~remotemedia.media.Json` whose
``value`` is its wire form: exactly the dict the node sent before, keys in the same
order. So sessions route events as Json (kind ``json``, byte budgets by their size),
the IPC codec and the gRPC conversion send them as Json, and clients and in-process
callers read them as Json, all unchanged; only nodes use the typed fields.

Why a subclass of Json, not a seventh :data:`~remotemedia.media.RuntimeData`
variant: every edge (session budgets, in-process results, the IPC codec, the gRPC
conversion, the CLI) already handles Json, and a caller's ``isinstance(data, Json)``
keeps matching. The wire dict is built once, when the event is: it is what budgets
count first anyway.

Rules of the wire form:

1. An event built from its fields has ``value == event.to_json()``, computed and
   checked to be JSON when it is built (``attrs.evolve`` builds it again).
2. ``parse_event(d)`` returns an event whose ``value`` *is* ``d``, the same object:
   a dict read from a worker or sent by a client passes through a node byte for
   byte, with keys the event has no field for (an older runtime's, a client's own).
3. For every event ``e`` built from fields, ``parse_event(e.value)`` has the same
   type and fields: an event that crosses a worker's IPC comes back as itself.
4. The shape is told by these keys, checked in this order: ``"interim": true``
   (an :class:`InterimTranscript`, or with ``text`` and no ``stable``/``unstable``
   a :class:`ReplyPiece`), ``turn_complete``, ``"interrupted": true``,
   ``turn_done``, ``turn`` (with ``"truncated": true``, ``reply`` or ``error``),
   any of ``speech_probability``, ``events``, ``is_speech_start``,
   ``is_speech_end`` (:class:`VoiceActivity`), then a ``text`` string
   (:class:`FinalTranscript`: Whisper's, or the words a client sends). These are the
   keys the nodes looked for before, in the order they did.
5. A dict whose keys of that shape have other types than the event's fields (a
   ``null`` is as if the key were absent) is no event: ``parse_event`` returns None,
   and it stays a plain Json, which the nodes ignore. ``parse_event`` never raises.
"""

from remotemedia.events._base import Event
from remotemedia.events._listening import (
    FinalTranscript,
    InterimTranscript,
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    SpeechTransition,
    TranscriptSegment,
    TurnVerdict,
    VoiceActivity,
    speech_transition,
)
from remotemedia.events._parse import event_of, parse_event
from remotemedia.events._replying import (
    Interrupted,
    ReplyPiece,
    ReplySentence,
    ReplyTruncated,
    TurnDone,
    TurnFailed,
)

__all__ = [
    "Event",
    "FinalTranscript",
    "InterimTranscript",
    "Interrupted",
    "ReplyPiece",
    "ReplySentence",
    "ReplyTruncated",
    "SpeechEnded",
    "SpeechPaused",
    "SpeechResumed",
    "SpeechStarted",
    "SpeechTransition",
    "TranscriptSegment",
    "TurnDone",
    "TurnFailed",
    "TurnVerdict",
    "VoiceActivity",
    "event_of",
    "parse_event",
    "speech_transition",
]
