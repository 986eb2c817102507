"""``remotemedia top``: a live view of a running server's sessions, from its metrics port.

Reads ``/v1/sessions`` (:mod:`remotemedia.service.live`) every ``--interval`` seconds
and redraws the terminal in place: each session with its pipeline, edge, age, chunks
in, results out, lost inputs and turns; under it its nodes (queue, inputs, worker
process and its state) and its last turns' latency by stage. ``--once`` prints one
table without terminal codes, for scripts; ``--json`` the document itself.

:func:`render` is pure (a document in, text out), so what the view shows is tested
without a terminal; the terminal part only clears, draws and waits.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import urllib.error
import urllib.request
from typing import Any, TextIO

from remotemedia.errors import RemoteMediaError

__all__ = ["fetch", "render", "run_top"]

_HOME_CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear the screen: one frame replaces the last
_HIDE, _SHOW = "\x1b[?25l", "\x1b[?25h"
_TURNS_SHOWN = 3


def _url(address: str) -> str:
    base = address if "://" in address else f"http://{address}"
    return base.rstrip("/") + "/v1/sessions"


def fetch(address: str, timeout: float = 5.0) -> dict[str, Any]:
    """The server's live sessions (``address``: host:port of its ``--metrics-port``).

    Raises:
        RemoteMediaError: The server cannot be reached, or does not serve them.
    """
    url = _url(address)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            document: dict[str, Any] = json.loads(reply.read())
    except urllib.error.HTTPError as error:
        raise RemoteMediaError(
            f"{url} answered {error.code}: is {address} the server's --metrics-port, and "
            "the server this version or newer?"
        ) from None
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise RemoteMediaError(
            f"Cannot read {url} ({reason}); start the server with --metrics-port and "
            "give that port."
        ) from None
    return document


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _turn_line(turn: dict[str, Any]) -> str:
    parts = []
    for stage, seconds in turn.get("stages", {}).items():
        part = f"{stage} {_ms(seconds)}"
        if stage == "transcribe" and turn.get("speculation", "off") != "off":
            part += f" ({turn['speculation']})"
        parts.append(part)
    latency = turn.get("latency", {})
    waited = max(latency.values()) if latency else None
    total = f" = {_ms(waited)} from end of speech" if waited is not None else ""
    return f"turn {turn['turn']} {turn['outcome']}: {', '.join(parts) or 'no timed stage'}{total}"


def _node_line(node: dict[str, Any]) -> str:
    line = f"{node['id']} ({node['type']}) queue {node['queue']}, {node['inputs']} inputs"
    worker = node.get("worker")
    if worker:
        restarts = worker["restarts"]
        line += (
            f", worker {worker['pid'] or '-'} {worker['state']}"
            f", {restarts} restart{'s' if restarts != 1 else ''}"
        )
    return line


def render(document: dict[str, Any], address: str, width: int = 120) -> str:
    """The view of ``document`` (from :func:`fetch`) as lines of at most ``width``."""
    sessions = document.get("sessions", [])
    state = "draining" if document.get("draining") else "serving"
    lines = [
        f"remotemedia top  {address}  server {document.get('server', '?')}  {state}  "
        f"{len(sessions)} session{'s' if len(sessions) != 1 else ''}",
        "",
        f"{'SESSION':<10}{'PIPELINE':<16}{'EDGE':<11}{'AGE':>8}{'IN':>9}{'OUT':>8}"
        f"{'LOST':>6}{'TURNS':>7}",
    ]
    for session in sorted(sessions, key=lambda s: -s["age_s"]):
        finished = [t for t in session["turns"] if t["outcome"] != "open"]
        lines.append(
            f"{session['id'][:8]:<10}{session['pipeline'][:15]:<16}{session['edge'][:10]:<11}"
            f"{_age(session['age_s']):>8}{session['chunks']:>9}{session['results']:>8}"
            f"{session['lost']:>6}{len(finished):>7}"
        )
        for node in session["nodes"]:
            lines.append("    " + _node_line(node))
        for turn in session["turns"][-_TURNS_SHOWN:]:
            lines.append("    " + _turn_line(turn))
    if not sessions:
        lines.append("(no live sessions)")
    return "\n".join(line[:width] for line in lines)


def run_top(
    address: str,
    *,
    once: bool = False,
    as_json: bool = False,
    interval: float = 1.0,
    out: TextIO = sys.stdout,
) -> int:
    """Show the server's sessions: once, or redrawn every ``interval`` s until interrupted."""
    if once or as_json:
        document = fetch(address)
        out.write(json.dumps(document, indent=2) if as_json else render(document, address))
        out.write("\n")
        return 0
    out.write(_HIDE)
    try:
        while True:
            try:
                frame = render(fetch(address), address, shutil.get_terminal_size().columns)
            except RemoteMediaError as error:
                frame = f"remotemedia top  {address}\n\n{error}\nRetrying every {interval:g} s."
            out.write(_HOME_CLEAR + frame + "\n")
            out.flush()
            time.sleep(interval)  # a view refreshed at human pace: polling is what it is
    except KeyboardInterrupt:
        return 0
    finally:
        out.write(_SHOW)
        out.flush()
