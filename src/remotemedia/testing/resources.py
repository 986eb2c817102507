"""What a process holds that a fault scenario must give back (the ``leak`` guarantee)."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import attrs
import trio

from remotemedia.executors.process import default_namespace

__all__ = ["Resources", "worker_pids"]


@attrs.frozen
class Resources:
    """What a process holds that a scenario must give back.

    Attributes:
        tasks: Trio tasks in the run (counted from the root task).
        fds: Open file descriptors.
        workers: Worker processes descending from this process.
        shm_files: Files in the shared-memory namespace of workers.
    """

    tasks: int
    fds: int
    workers: frozenset[int]
    shm_files: frozenset[str]

    @classmethod
    def take(cls) -> Resources:
        """Count them now (call from inside the Trio run)."""
        gc.collect()  # a socket dropped without close() is only freed by the collector
        return cls(
            tasks=_count_tasks(),
            fds=len(os.listdir("/proc/self/fd")),
            workers=frozenset(worker_pids()),
            shm_files=frozenset(str(path) for path in default_namespace().files()),
        )

    def leaked_since(self, before: Resources) -> list[str]:
        """What is held now that was not ``before``."""
        leaks = []
        if self.tasks > before.tasks:
            leaks.append(f"{self.tasks - before.tasks} Trio task(s)")
        if self.fds > before.fds:
            leaks.append(f"{self.fds - before.fds} file descriptor(s)")
        if extra := self.workers - before.workers:
            leaks.append(f"worker process(es) {sorted(extra)}")
        if extra_files := self.shm_files - before.shm_files:
            leaks.append(f"shared-memory file(s) {sorted(extra_files)}")
        return leaks


def _count_tasks() -> int:
    count = 0
    root = trio.lowlevel.current_root_task()
    assert root is not None, "call from inside a Trio run"
    pending = [root]
    while pending:
        task = pending.pop()
        count += 1
        pending += [child for nursery in task.child_nurseries for child in nursery.child_tasks]
    return count


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
