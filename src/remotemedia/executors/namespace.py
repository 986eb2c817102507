"""Shared-memory namespaces: one per server process, and the leftovers of dead ones.

Every server process keeps its workers' shared memory under a namespace named
after its pid (``remotemedia_<pid>_``), so that what a killed process left behind
can be told apart from what a live one is using, and removed.
"""

from __future__ import annotations

import atexit
import functools
import os
import re
import tempfile
import uuid
from pathlib import Path

from remotemedia.ipc.shm import SHM_DIR, ShmNamespace

__all__ = ["PREFIX", "default_namespace", "new_session_id", "remove_dead_namespaces"]

PREFIX = "remotemedia_"
_OWNER = re.compile(rf"{PREFIX}(\d+)_")


@functools.cache
def default_namespace() -> ShmNamespace:
    """A shared-memory namespace unique to this process (server instance).

    Created on first use; its leftovers are removed when the process exits, and the
    leftovers of earlier processes that died without cleaning up are removed now.
    """
    remove_dead_namespaces()
    pid = os.getpid()
    namespace = ShmNamespace(f"{PREFIX}{pid}_", Path(tempfile.gettempdir()) / f"{PREFIX}{pid}")
    atexit.register(namespace.remove)
    return namespace


def remove_dead_namespaces() -> int:
    """Remove shared-memory namespaces of remotemedia processes that no longer exist.

    Looks at both halves of a namespace: its files in /dev/shm and its root folder
    in the temp directory (either can be left alone by a process killed midway).
    """
    tmp = Path(tempfile.gettempdir())
    owners: set[int] = set()
    for folder in (SHM_DIR, tmp):
        for name in os.listdir(folder) if folder.is_dir() else []:
            match = _OWNER.match(name + "_")  # a root folder is named without the "_"
            if match:
                owners.add(int(match.group(1)))
    removed = 0
    for pid in sorted(owners):
        if not _alive(pid):
            ShmNamespace(f"{PREFIX}{pid}_", tmp / f"{PREFIX}{pid}").remove()
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited: its namespace is as dead as it is
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def new_session_id() -> str:
    """A short id for naming a session's shared-memory services."""
    return uuid.uuid4().hex[:12]
