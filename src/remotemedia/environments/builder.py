"""The program that builds one environment: ``python -m remotemedia.environments.builder PLAN``.

It runs as a process of its own so that the lock it holds dies with it: builds of
the same environment by several servers (``serve --processes``), sessions and
``remotemedia envs build`` wait for each other on an ``flock`` of ``<key>.lock``,
and a build that is killed leaves an unmarked folder the next build starts over.

Steps, all logged to ``<key>.log`` (the interesting lines also to stdout, which the
server relays as progress):

1. take the lock (saying so when another build holds it);
2. return at once if ``<key>/remotemedia-env.json`` exists: someone built it;
3. make a venv with the environment's interpreter, with that Python's own pip (or
   without, where it has no ``ensurepip``: the server's pip then installs into it);
4. install the requirements and the worker side of remotemedia's dependencies;
5. write ``remotemedia-env.json`` last: only a marked folder is an environment.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from remotemedia.environments.spec import MARKER

__all__ = ["main"]

_SHOWN = ("Collecting", "Downloading", "Installing", "Successfully", "ERROR", "error:", "Resolved")
_PROGRESS_EVERY = 5.0  # seconds between "still installing" lines while the installer is quiet


def _say(log: IO[str], line: str, *, show: bool = True) -> None:
    log.write(line + "\n")
    log.flush()
    if show:
        print(line, flush=True)


def _uv() -> list[str]:
    uv = shutil.which("uv")
    return [uv] if uv else [sys.executable, "-m", "uv"]


def _uv_environment() -> dict[str, str]:
    """The environment uv runs in: trusting the system's certificates, as pip does.

    A proxy's CA is in the system's store, not in the certificates uv carries; a
    ``UV_NATIVE_TLS`` of the user's own stands.
    """
    return {**os.environ, "UV_NATIVE_TLS": os.environ.get("UV_NATIVE_TLS", "1")}


def _installer_command(plan: dict[str, Any], env_python: str) -> list[str]:
    packages = [*plan["requirements"], *plan["worker_requirements"]]
    if plan["installer"] == "uv":
        return [*_uv(), "pip", "install", "--python", env_python, *packages]
    # The environment's own pip when it has one (its Python's ensurepip: a pip that
    # runs on that Python; the server's may be too old for a newer one), else the
    # server's, pointed at it. pip's configuration applies either way.
    own = Path(env_python).with_name("pip")
    pip = (
        [env_python, "-m", "pip"]
        if own.exists()
        else [sys.executable, "-m", "pip", "--python", env_python]
    )
    return [*pip, "install", "--progress-bar", "off", *packages]


def _make_venv(plan: dict[str, Any], folder: Path, log: IO[str]) -> int:
    """Make the venv: with the interpreter's own pip when it has ensurepip, else without."""
    if plan["installer"] == "uv":
        return _run(
            [*_uv(), "venv", "--python", plan["python"], str(folder)], log, _uv_environment()
        )
    if _run([plan["python"], "-m", "venv", str(folder)], log) == 0:
        return 0
    # Debian's Pythons lack ensurepip unless python3-venv is installed.
    shutil.rmtree(folder, ignore_errors=True)
    return _run([plan["python"], "-m", "venv", "--without-pip", str(folder)], log)


def _run(command: list[str], log: IO[str], env: dict[str, str] | None = None) -> int:
    """Run an installer step, logging its output and showing the interesting lines."""
    _say(log, "$ " + " ".join(command), show=False)
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env
    )

    def stop(signum: int, frame: object) -> None:
        process.kill()  # the installer must not outlive the build
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    assert process.stdout is not None
    last_shown = time.monotonic()
    for raw in process.stdout:
        line = raw.rstrip()
        show = line.lstrip().startswith(_SHOWN)
        if not show and time.monotonic() - last_shown > _PROGRESS_EVERY:
            show = bool(line.strip())
        if show:
            last_shown = time.monotonic()
        _say(log, line, show=show)
    return process.wait()


def build(plan: dict[str, Any]) -> int:
    """Build the environment ``plan`` describes; returns the exit status."""
    root = Path(plan["root"])
    key = plan["key"]
    folder = root / key
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{key}.lock", "a+") as lock, open(root / f"{key}.log", "a") as log:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("Waiting for another build of this environment to finish", flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / MARKER).exists():
            print("Built by another process", flush=True)
            return 0
        started = time.monotonic()
        _say(log, f"== {time.strftime('%Y-%m-%d %H:%M:%S')} building {key} in {folder}")
        if folder.exists():
            shutil.rmtree(folder)  # an unfinished build's leftovers
        _say(log, f"Creating a virtual environment with Python {plan['version']}")
        if (status := _make_venv(plan, folder, log)) != 0:
            return status
        env_python = str(folder / "bin" / "python")
        _say(log, f"Installing {', '.join(plan['requirements']) or 'the worker side'}")
        env = _uv_environment() if plan["installer"] == "uv" else None
        if (status := _run(_installer_command(plan, env_python), log, env)) != 0:
            _say(log, f"The installer failed (exit status {status}).")
            return status
        seconds = time.monotonic() - started
        marker = {
            "key": key,
            "python": plan["python"],
            "version": plan["version"],
            "requirements": plan["requirements"],
            "installer": plan["installer"],
            "remotemedia": plan["remotemedia"],
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": round(seconds, 1),
        }
        temporary = folder / (MARKER + ".tmp")
        temporary.write_text(json.dumps(marker, indent=2) + "\n")
        os.replace(temporary, folder / MARKER)
        _say(log, f"Built in {seconds:.0f} s")
        return 0


def main() -> int:
    """Entry point: the plan is one JSON argument (see ``remotemedia.environments.cache``)."""
    plan = json.loads(sys.argv[1])
    with contextlib.suppress(KeyboardInterrupt):
        return build(plan)
    return 130


if __name__ == "__main__":
    sys.exit(main())
