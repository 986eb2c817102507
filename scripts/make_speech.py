"""Generate the bundled demo speech (src/remotemedia/data/speech.{wav,json}) with piper.

The .json holds each sentence's true bounds, computed from the construction by
remotemedia.testing.synthesize_speech. Rerun after changing the sentences:

    python3 scripts/make_speech.py
"""

from __future__ import annotations

import json
from pathlib import Path

import attrs

from remotemedia.testing import synthesize_speech
from remotemedia.wav import write_wav

SENTENCES = (
    "Welcome to remote media, a runtime for real time speech pipelines.",
    "Each session runs in its own Trio nursery.",
    "Voice activity detection finds where every sentence starts and ends.",
)

DATA = Path(__file__).resolve().parent.parent / "src" / "remotemedia" / "data"


def main() -> None:
    sample = synthesize_speech(SENTENCES, gap_s=1.2, lead_s=0.8, tail_s=0.8)
    DATA.mkdir(parents=True, exist_ok=True)
    write_wav(DATA / "speech.wav", sample.audio)
    truth = {
        "sample_rate": sample.audio.sample_rate,
        "generator": "scripts/make_speech.py (piper-tts, en_US-joe-medium)",
        "segments": [attrs.asdict(s) for s in sample.segments],
    }
    (DATA / "speech.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {DATA / 'speech.wav'} ({sample.audio.duration:.2f} s) and speech.json")


if __name__ == "__main__":
    main()
