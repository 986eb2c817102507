"""remotemedia top: the view of a server's live sessions (pure), and its errors."""

from __future__ import annotations

import io
import socket

import pytest

from remotemedia.cli.top import fetch, render, run_top
from remotemedia.errors import RemoteMediaError

DOCUMENT = {
    "server": "vm/1036",
    "draining": False,
    "sessions": [
        {
            "id": "51dcd9db-0000-4000-8000-000000000000",
            "pipeline": "transcribe",
            "edge": "grpc",
            "age_s": 64.2,
            "chunks": 3100,
            "results": 22,
            "lost": 1,
            "nodes": [
                {
                    "id": "vad",
                    "type": "SileroVADNode",
                    "queue": 0,
                    "inputs": 3100,
                    "busy_s": 1.2,
                    "worker": None,
                },
                {
                    "id": "whisper",
                    "type": "WhisperNode",
                    "queue": 2,
                    "inputs": 8,
                    "busy_s": 3.1,
                    "worker": {"pid": 1081, "state": "running", "restarts": 1},
                },
            ],
            "turns": [
                {
                    "turn": 1,
                    "outcome": "transcribed",
                    "speculation": "hit",
                    "stages": {"vad": 0.096, "transcribe": 0.199},
                    "latency": {"transcript": 0.295},
                },
                {"turn": 2, "outcome": "open", "speculation": "off", "stages": {}, "latency": {}},
            ],
        }
    ],
}


def test_the_view_shows_each_session_its_nodes_workers_and_turns() -> None:
    assert render(DOCUMENT, "127.0.0.1:9464").splitlines() == [
        "remotemedia top  127.0.0.1:9464  server vm/1036  serving  1 session",
        "",
        "SESSION   PIPELINE        EDGE            AGE       IN     OUT  LOST  TURNS",
        "51dcd9db  transcribe      grpc          1m04s     3100      22     1      1",
        "    vad (SileroVADNode) queue 0, 3100 inputs",
        "    whisper (WhisperNode) queue 2, 8 inputs, worker 1081 running, 1 restart",
        "    turn 1 transcribed: vad 96 ms, transcribe 199 ms (hit) = 295 ms from end of speech",
        "    turn 2 open: no timed stage",
    ]


def test_the_view_fits_the_terminal_and_says_when_nothing_runs() -> None:
    view = render({"server": "vm/1", "draining": True, "sessions": []}, "h:1", width=30)
    assert view.splitlines()[0] == "remotemedia top  h:1  server v"
    assert "(no live sessions)" in view
    assert all(len(line) <= 30 for line in render(DOCUMENT, "h:1", width=30).splitlines())


def test_a_server_that_does_not_answer_is_named_with_the_flag_to_set() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(RemoteMediaError, match=f"Cannot read http://127.0.0.1:{port}/v1/sessions"):
        fetch(f"127.0.0.1:{port}", timeout=1)
    with pytest.raises(RemoteMediaError, match="--metrics-port"):
        run_top(f"127.0.0.1:{port}", once=True, out=io.StringIO())
