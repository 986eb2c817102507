"""Find this test process's worker processes (and only ours: other suites may run alongside)."""

from __future__ import annotations

import os
from pathlib import Path


def _parent_of(pid: int) -> int:
    # /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces, so split after ")".
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rpartition(")")[2].split()[1])


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        pid = _parent_of(pid)
    return False


def worker_pids() -> set[int]:
    """Live remotemedia worker processes started (directly or not) by this process."""
    me = os.getpid()
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if b"remotemedia.executors.worker" not in Path(f"/proc/{entry}/cmdline").read_bytes():
                continue
            if _descends_from(int(entry), me):
                pids.add(int(entry))
        except (OSError, ValueError, IndexError):
            pass  # the process exited while we looked
    return pids
