"""Turn detection: Smart Turn v3.2 on the sixty test sentences, as the accumulator would use it.

Run through scripts/bench.py (`python3 scripts/bench.py turn`). Each sentence (Piper,
no prosody noise) is judged twice: at its true end, and cut at its middle, each with
200 ms of silence after (what the model hears at a VAD pause). A good `end_turn_above`
ends many true ends early and few middles; a good `hold_turn_below` holds many
middles and no true end. Also the model's time per judgement on one thread.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import soxr
import trio

THRESHOLDS_ABOVE = (0.7, 0.8, 0.9, 0.95)
THRESHOLDS_BELOW = (0.05, 0.1, 0.2, 0.3)


def bench_turn(quick: bool) -> dict[str, Any]:
    """Smart Turn's judgements of true ends and of middles."""
    from remotemedia.nodes.audio.turn import SmartTurnNode, SmartTurnParams
    from remotemedia.testing import TEST_SENTENCES, synthesize_speech

    node = SmartTurnNode("turn", SmartTurnParams())
    trio.run(node.initialize)
    sentences = TEST_SENTENCES[:20] if quick else TEST_SENTENCES
    sample = synthesize_speech(sentences, gap_s=1.0, lead_s=0.3, tail_s=0.5)
    audio = soxr.resample(sample.audio.samples, sample.audio.sample_rate, 16_000)
    silence = np.zeros(3_200, np.float32)
    ends, middles, seconds = [], [], []
    for segment in sample.segments:
        start = int((segment.start_ms - 200) * 16)
        middle = int((segment.start_ms + segment.end_ms) / 2 * 16)
        for cut, into in ((int(segment.end_ms * 16), ends), (middle, middles)):
            clip = np.concatenate([audio[start:cut], silence]).astype(np.float32)
            began = time.perf_counter()
            into.append(node.predict(clip))
            seconds.append(time.perf_counter() - began)
    ends_a, middles_a = np.array(ends), np.array(middles)
    return {
        "sentences": len(sample.segments),
        "ms_per_judgement_p50": float(np.percentile(seconds, 50) * 1000),
        "ends_complete": int((ends_a >= 0.5).sum()),
        "middles_complete": int((middles_a >= 0.5).sum()),
        "end_early": {
            str(t): [int((ends_a >= t).sum()), int((middles_a >= t).sum())]
            for t in THRESHOLDS_ABOVE
        },
        "hold": {
            str(t): [int((ends_a < t).sum()), int((middles_a < t).sum())] for t in THRESHOLDS_BELOW
        },
    }
