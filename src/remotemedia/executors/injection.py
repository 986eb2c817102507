"""Carrying out a fault's action where it is due: raise, hang, wait, die, corrupt.

The fault kit's seams (:mod:`remotemedia.testing.seams`) decide when; a worker
process carries out what its runtime injected (``Inject``), where SIGKILL and exit
make sense too (``in_worker=True``).
"""

from __future__ import annotations

import builtins
import os
import signal

import trio

from remotemedia.faults import Action, ActionKind, FaultPlanError

__all__ = ["corrupted", "perform", "sigterm_server"]


def sigterm_server() -> None:
    """Send SIGTERM to this (the server's) process: it drains, as on a real SIGTERM."""
    os.kill(os.getpid(), signal.SIGTERM)


async def perform(action: Action, where: str, *, in_worker: bool = False) -> None:
    """Raise, hang or wait as ``action`` says; in a worker, also die or exit.

    Raises:
        Exception: The injected exception, for RAISE.
        FaultPlanError: ``action`` needs a worker process (SIGKILL, EXIT) and this
            is not one.
    """
    if in_worker and action.kind is ActionKind.SIGKILL:
        os.kill(os.getpid(), signal.SIGKILL)
    if in_worker and action.kind is ActionKind.EXIT:
        os._exit(action.exit_code)  # as a crash would: no cleanup, no goodbye
    if action.kind is ActionKind.SIGTERM_SERVER:
        sigterm_server()
        return
    if action.kind is ActionKind.RAISE:
        raise _exception(action.exception)(f"Injected fault at {where}.")
    if action.kind is ActionKind.HANG:
        await trio.sleep_forever()
    elif action.kind is ActionKind.DELAY:
        await trio.sleep(action.delay_ms / 1000)
    else:
        raise FaultPlanError(
            f"Cannot {action} at {where}: the node runs in-process; give it "
            "`executor: process` for faults that need a worker."
        )


def _exception(name: str) -> type[Exception]:
    cls = getattr(builtins, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        raise FaultPlanError(f"Cannot raise {name!r}: it is not a builtin exception.")
    return cls


def corrupted(data: bytes) -> bytes:
    """``data`` with its first 16 bytes inverted: the header of any frame or message breaks."""
    head = bytes(byte ^ 0xFF for byte in data[:16])
    return head + data[16:]
