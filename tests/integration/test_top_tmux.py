"""``remotemedia top`` in a real terminal (tmux) against a real server with a live session."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from remotemedia.cli.run import split_chunks
from remotemedia.client import open_trio_client
from remotemedia.testing import synthesize_speech
from tests.processes import require_program, server_process

pytest.importorskip("faster_whisper", reason="needs remotemedia[whisper]")
pytest.importorskip("piper", reason="needs remotemedia[piper]")
pytestmark = pytest.mark.slow

SENTENCES = ("The weather is lovely today.", "Please send me the report tomorrow.")


class Terminal:
    """A tmux server of the test's own (its own socket), one window 120 x 40."""

    def __init__(self, tmux: str, socket: Path) -> None:
        self.tmux, self.socket = tmux, socket

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "TERM": "xterm-256color"}
        return subprocess.run(
            [self.tmux, "-S", str(self.socket), *args],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "top").stdout

    def running(self) -> bool:
        return self.run("has-session", "-t", "top").returncode == 0


async def _until(terminal: Terminal, pattern: str) -> str:
    """The screen once it shows ``pattern`` (tmux has no event to wait on: look again)."""
    while True:
        screen = terminal.screen()
        if re.search(pattern, screen, re.MULTILINE):
            return screen
        await trio.sleep(0.2)


def _chunks_in(screen: str) -> int:
    row = re.search(r"^\w{8}\s+transcribe\s+grpc\s+\S+\s+(\d+)", screen, re.MULTILINE)
    assert row, screen
    return int(row[1])


async def test_top_redraws_a_live_sessions_view_in_place_and_quits_on_ctrl_c(
    tmp_path: Path,
) -> None:
    tmux = require_program("tmux", "remotemedia top is tested in a real terminal")
    terminal = Terminal(tmux, tmp_path / "tmux.sock")
    sample = synthesize_speech(SENTENCES, gap_s=1.2, lead_s=0.3, tail_s=1.0)
    with trio.fail_after(120):
        async with (
            server_process("--metrics-port", "0", "--log-level", "warning") as (_, address, port),
            open_trio_client(address) as client,
            client.stream("transcribe") as session,
            trio.open_nursery() as nursery,
        ):

            async def talk() -> None:  # a live session: speech in real time, again and again
                start, index = trio.current_time(), 0
                while True:
                    for chunk in split_chunks(sample.audio, 20.0):
                        await trio.sleep_until(start + index * 0.02)
                        await session.send(chunk)
                        index += 1

            async def drain() -> None:
                async for _ in session:
                    pass

            nursery.start_soon(talk)
            nursery.start_soon(drain)
            command = f"{sys.executable} -m remotemedia top 127.0.0.1:{port} --interval 0.3"
            started = terminal.run(
                "new-session", "-d", "-s", "top", "-x", "120", "-y", "40", command
            )
            assert started.returncode == 0, started.stderr
            try:
                screen = await _until(terminal, r"^\s+turn 1 transcribed: vad \d+ ms")
                # One frame on the screen: redrawn in place, not scrolled.
                assert screen.count("remotemedia top") == 1, screen
                assert "whisper (WhisperNode)" in screen
                assert re.search(r"worker \d+ running, 0 restarts", screen), screen
                before = _chunks_in(screen)
                await trio.sleep(1.0)
                after = _chunks_in(terminal.screen())
                assert after > before  # live: the counts move
                terminal.run("send-keys", "-t", "top", "C-c")
                while True:  # the view quits; its window closes
                    if not terminal.running():
                        break
                    await trio.sleep(0.1)
            finally:
                terminal.run("kill-server")
            nursery.cancel_scope.cancel()
