"""Finding the Pythons of this machine, for environments that ask for another one.

Looked for where Pythons live on Linux: ``python3.X`` and ``python3`` on ``PATH``,
pyenv's versions, uv's managed Pythons, ``/usr/local/bin`` and ``/usr/bin`` (a
server started with a bare ``PATH`` still finds them). Each candidate is asked for
its version once per process.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from packaging.version import Version

from remotemedia.environments.spec import Interpreter, python_specifier
from remotemedia.errors import NodeEnvironmentError

__all__ = ["find_interpreter", "own_interpreter", "pythons"]

_PROBE = "import json, sys; print(json.dumps([sys.executable, '%d.%d.%d' % sys.version_info[:3]]))"
MINIMUM = Version("3.11")
"""The oldest Python the worker side of remotemedia runs on."""


def own_interpreter() -> Interpreter:
    """The interpreter the server runs on (its base, when that runs in a venv).

    An environment is a venv of its own, so it is made from the base interpreter:
    a venv made from a venv's ``python`` would inherit nothing and confuse tools.
    """
    base = getattr(sys, "_base_executable", None) or sys.executable
    version = ".".join(str(part) for part in sys.version_info[:3])
    return Interpreter(os.path.realpath(base), version)


def _candidates() -> list[str]:
    names = [f"python3.{minor}" for minor in range(11, 20)] + ["python3"]
    found = [path for name in names if (path := shutil.which(name))]
    home = Path.home()
    pyenv = os.environ.get("PYENV_ROOT", str(home / ".pyenv"))
    patterns = [
        f"{pyenv}/versions/*/bin/python3",
        str(home / ".local/share/uv/python/*/bin/python3"),
        "/usr/local/bin/python3.*",
        "/usr/bin/python3.*",
        "/usr/bin/python3",
    ]
    for pattern in patterns:
        found.extend(sorted(glob.glob(pattern)))
    return found


@functools.cache
def _probe(path: str) -> Interpreter | None:
    try:
        completed = subprocess.run(
            [path, "-I", "-c", _PROBE], capture_output=True, text=True, timeout=15, check=False
        )
        executable, version = json.loads(completed.stdout)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None  # not a Python (a python3.11-config script, say) or a broken one
    return Interpreter(os.path.realpath(executable), version)


@functools.cache
def pythons() -> tuple[Interpreter, ...]:
    """The distinct usable Pythons (>= 3.11) on this machine, the server's own first."""
    own = own_interpreter()
    seen = {own.path}
    found = [own]
    for candidate in _candidates():
        if os.path.realpath(candidate) in seen or not os.access(candidate, os.X_OK):
            continue
        interpreter = _probe(candidate)
        if interpreter is None or interpreter.path in seen:
            continue
        seen.add(interpreter.path)
        if Version(interpreter.version) >= MINIMUM:
            found.append(interpreter)
    return tuple(found)


def find_interpreter(python: str | None) -> Interpreter:
    """The interpreter an environment's ``python`` asks for.

    The server's own Python when it fits (the common case, and the cheapest: wheels
    already in pip's cache fit it); otherwise the newest that fits.

    Raises:
        NodeEnvironmentError: No Python on this machine fits; the message lists those found.
    """
    if python is None:
        return own_interpreter()
    if python_specifier(python) is None:  # a path
        interpreter = _probe(python)
        if interpreter is None:
            raise NodeEnvironmentError(
                f"python {python!r} cannot be run; give the path of a Python >= 3.11."
            )
        return interpreter
    found = pythons()
    fitting = [i for i in found if i.satisfies(python)]
    if not fitting:
        listed = ", ".join(f"{i.version} ({i.path})" for i in found)
        raise NodeEnvironmentError(
            f"No Python on this machine is {python!r} (found: {listed}). Install one "
            "(pyenv, uv python install, or the OS's packages) or change the node's 'python'."
        )
    if fitting[0] == found[0]:
        return fitting[0]
    return max(fitting, key=lambda i: Version(i.version))
