"""A worker's operating-system process: started, signalled and awaited from Trio."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
from collections.abc import Mapping

import trio

__all__ = ["ChildProcess", "describe_exit", "die_with_parent"]

_PR_SET_PDEATHSIG = 1


class ChildProcess:
    """A child process started from the Trio thread, awaited through a pidfd.

    A worker, or a server process of ``serve --processes``. Not
    ``trio.lowlevel.open_process``: it forks in a worker thread, and a child's
    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked it exits, which Trio's
    idle thread cache does after a few seconds, killing healthy workers.
    """

    def __init__(
        self,
        command: list[str],
        *,
        pass_fds: list[int],
        environment: Mapping[str, str] | None = None,
        overrides: Mapping[str, str] | None = None,
        stdout: int | None = None,
    ) -> None:
        # The server's own environment wins over ``environment`` (an operator's
        # explicit setting stands); ``overrides`` win over both.
        env = {**(environment or {}), **os.environ, **(overrides or {})}
        self._popen = subprocess.Popen(
            command,
            pass_fds=pass_fds,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,  # a file descriptor; None: the runtime's own
            start_new_session=True,  # a terminal's Ctrl-C reaches only the runtime
        )
        self.pid = self._popen.pid
        self._pidfd = os.pidfd_open(self.pid)

    def exited(self) -> bool:
        """Whether the process has exited (reaps it if so); does not block."""
        if self._popen.returncode is None and self._popen.poll() is not None:
            os.close(self._pidfd)
            self._pidfd = -1
        return self._popen.returncode is not None

    @property
    def returncode(self) -> int | None:
        """The exit status once the process has been waited for, else None."""
        return self._popen.returncode

    async def wait(self) -> int:
        """Wait (without polling: the pidfd becomes readable at exit) and reap."""
        if self._popen.returncode is None:
            await trio.lowlevel.wait_readable(self._pidfd)
            self._popen.wait()
            os.close(self._pidfd)
            self._pidfd = -1
        return self._popen.returncode

    def terminate(self) -> None:
        """Send SIGTERM to the worker's process group (anything it started, too)."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL to the worker's process group."""
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        if self._popen.returncode is None:
            # start_new_session made the worker a group leader: its group id is its pid.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signum)


def die_with_parent(signum: int) -> bool:
    """Ask Linux to send this process ``signum`` when its parent dies (``PR_SET_PDEATHSIG``).

    Call it first thing in a child started by a :class:`ChildProcess`. The parent may
    already have died before the call: compare ``os.getppid()`` with its pid after.

    Returns:
        Whether the request was made (False where ``prctl`` does not exist).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signum)
    except (OSError, AttributeError):
        return False  # not Linux
    return True


def describe_exit(code: int) -> str:
    """How a process ended, from its exit status, as the end of a sentence."""
    if code < 0:
        return f"it was killed by {signal.Signals(-code).name}"
    return f"it exited with status {code}"
