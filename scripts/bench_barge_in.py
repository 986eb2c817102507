"""Barge-in: the user talks over a reply; how soon is it cut, and does any of it leak?

Run through scripts/bench.py (`python3 scripts/bench.py barge_in`). A real `remotemedia
serve` process and the scripted user of `remotemedia demo --converse` (real-time
microphone, Piper's voice): it asks a question, lets the reply play 1.2 s, then
talks over it. Repeated on one server. Measured from the true start of the user's
interrupting speech (known from the synthesis) to the `interrupted` result at the
client, and the audio of the cut reply that arrived after it (must be none); also
the end of the question to the reply's first audio.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_conversation import start_server
from bench_grpc import stop_server


def bench_barge_in(quick: bool) -> dict[str, Any]:
    """Several conversations, each cut once, against one fresh server."""
    from remotemedia.cli.converse import converse

    runs = 3 if quick else 10
    process, address, _ = start_server("speculative")
    talks = []
    try:
        for _ in range(runs):
            talks.append(trio.run(converse, address))
    finally:
        stop_server(process)
    cut_ms, first_reply_ms, spoken_ms = [], [], []
    for talk in talks:
        if talk.interrupted and len(talk.speech) > 1:
            when, value = talk.interrupted[0]
            cut_ms.append((when - talk.speech[1][0]) * 1000)
            spoken_ms.append(float(value["spoken_ms"]))
        if talk.speech and "coordinator-t1" in talk.replies:
            first_reply_ms.append((talk.replies["coordinator-t1"] - talk.speech[0][1]) * 1000)
    return {
        "runs": runs,
        "interrupted": len(cut_ms),
        "speech_to_interrupted_p50_ms": float(np.percentile(cut_ms, 50)) if cut_ms else None,
        "speech_to_interrupted_max_ms": max(cut_ms, default=None),
        "late_audio_chunks": sum(talk.late_audio for talk in talks),
        "spoken_before_cut_p50_ms": float(np.percentile(spoken_ms, 50)) if spoken_ms else None,
        "question_end_to_reply_audio_p50_ms": (
            float(np.percentile(first_reply_ms, 50)) if first_reply_ms else None
        ),
    }
