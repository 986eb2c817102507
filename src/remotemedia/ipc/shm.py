"""iceoryx2 shared memory: the only module that imports iceoryx2.

One publish/subscribe service per direction and worker, carrying codec frames as
``Slice[c_uint8]`` (``Slice[c_float]`` over-reads, iceoryx2#1533). Publishers never
drop silently: safe overflow is off, the strategy is DiscardData, and a send that
reaches no subscriber is an error (flow control keeps buffers from filling). A
received frame is held in a :class:`Lease`; its memory view is valid only inside it.

Every server instance uses its own prefix and root folder, so instances never see
each other's resources, and stale resources of dead workers can be removed.

iceoryx2 names take printable ASCII only, at most 128 characters for a node and 255
for a service, while a node id is any text: names are built from :func:`safe_label`.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import re
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import iceoryx2 as iox2
import numpy as np

from remotemedia.errors import RemoteMediaError

__all__ = ["SHM_DIR", "Lease", "ShmError", "ShmNamespace", "ShmPort", "remove_stale", "safe_label"]

SHM_DIR = Path("/dev/shm")
BUFFER = 16
"""Frames a subscriber buffers; flow control keeps fewer than this in flight."""


class ShmError(RemoteMediaError):
    """Shared memory failed (a frame was not delivered, or a service is missing)."""


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_READABLE_CHARS = 24


def safe_label(text: str) -> str:
    """A short label for ``text`` that is valid inside any iceoryx2 name.

    The label is a readable ASCII rendering of the start of ``text`` followed by a
    hash of all of it, so two different texts get different labels even when they
    differ only in characters the rendering drops or cuts (a 64-bit hash: a clash
    is negligible among the nodes of one session), and the label never exceeds 41
    characters whatever the length of ``text``.

    Args:
        text: Any string, such as a node id (non-ASCII, control characters and
            unpaired surrogates included).

    Returns:
        ``<readable>-<16 hex digits>``, or only the hex digits when nothing of
        ``text`` is readable.
    """
    # surrogatepass: a lone surrogate (possible in a JSON manifest) still hashes.
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    readable = _UNSAFE.sub("_", text[:_READABLE_CHARS]).strip("_")
    return f"{readable}-{digest}" if readable else digest


@attrs.frozen
class ShmNamespace:
    """Where one server instance's iceoryx2 resources live.

    Attributes:
        prefix: Prefix of every shared-memory file (``/dev/shm/<prefix>...``).
        root: Folder for iceoryx2's node and service files.
    """

    prefix: str
    root: Path

    def config(self) -> Any:
        """An iceoryx2 config for this namespace."""
        config = iox2.config.default()
        config.global_cfg.prefix = iox2.FileName.new(self.prefix)
        config.global_cfg.root_path = iox2.Path.new(str(self.root) + "/")
        return config

    def node(self, name: str) -> Any:
        """Create an iceoryx2 node; iceoryx2 leaves signals to the caller."""
        return (
            iox2.NodeBuilder.new()
            .name(iox2.NodeName.new(name))
            .config(self.config())
            .signal_handling_mode(iox2.SignalHandlingMode.Disabled)
            .create(iox2.ServiceType.Ipc)
        )

    def remove(self) -> None:
        """Delete what is left of this namespace (the global segment, the root folder).

        Call when no node of the namespace is alive any more (at server exit).
        """
        for name in os.listdir(SHM_DIR) if SHM_DIR.is_dir() else []:
            if name.startswith(self.prefix):
                with contextlib.suppress(OSError):
                    (SHM_DIR / name).unlink()
        shutil.rmtree(self.root, ignore_errors=True)

    def files(self) -> list[str]:
        """This namespace's files in /dev/shm, except the shared global segment."""
        try:
            names = os.listdir(SHM_DIR)
        except OSError:
            return []
        return sorted(n for n in names if n.startswith(self.prefix) and "global_mgmt" not in n)


def remove_stale(namespace: ShmNamespace) -> int:
    """Remove the resources of dead iceoryx2 nodes in ``namespace``; returns how many."""
    removed = 0
    for state in iox2.Node.list(iox2.ServiceType.Ipc, namespace.config()):
        view = getattr(state, "_0", None)
        if isinstance(view, iox2.DeadNodeView):
            view.try_remove_stale_resources()
            removed += 1
    return removed


class ShmPort:
    """One direction of a worker's data channel: publish or receive frames.

    Args:
        node: The iceoryx2 node that owns the port.
        service: The service name (``<session>_<label>_input`` / ``_output``, with
            the node's :func:`safe_label`).
        publish: Create a publisher (else a subscriber).
        max_bytes: Initial largest frame; slices grow as needed.
    """

    def __init__(self, node: Any, service: str, *, publish: bool, max_bytes: int = 65_536) -> None:
        self._service = (
            node.service_builder(iox2.ServiceName.new(service))
            .publish_subscribe(iox2.Slice[ctypes.c_uint8])
            .subscriber_max_buffer_size(BUFFER)
            .subscriber_max_borrowed_samples(2)
            .enable_safe_overflow(False)
            .open_or_create()
        )
        self.name = service
        self._publisher: Any = None
        self._subscriber: Any = None
        if publish:
            self._publisher = (
                self._service.publisher_builder()
                .initial_max_slice_len(max_bytes)
                .allocation_strategy(iox2.AllocationStrategy.PowerOfTwo)
                .backpressure_strategy(iox2.BackpressureStrategy.DiscardData)
                .create()
            )
        else:
            self._subscriber = self._service.subscriber_builder().create()

    def publish(self, frame: bytes | Sequence[bytes | memoryview]) -> None:
        """Copy one frame (or its pieces, in order) into shared memory and send it.

        Each piece is copied once, straight into the loaned sample: the frame is
        never joined in private memory first.

        Raises:
            ShmError: The subscriber did not get it (absent, or its buffer is full).
        """
        parts = (frame,) if isinstance(frame, bytes) else frame
        size = sum(len(part) if isinstance(part, bytes) else part.nbytes for part in parts)
        sample = self._publisher.loan_slice_uninit(size)
        if size:
            target = np.frombuffer(sample.payload().as_memory_view(), np.uint8)
            offset = 0
            for part in parts:
                piece = np.frombuffer(part, np.uint8)
                target[offset : offset + piece.size] = piece
                offset += piece.size
        delivered = sample.assume_init().send()
        if delivered != 1:
            raise ShmError(
                f"A frame on {self.name} reached {delivered} subscribers instead of 1; the "
                "worker is gone or its buffer is full."
            )

    def take(self) -> Lease | None:
        """Take the next frame out of the buffer (None if none is waiting).

        The frame stays in shared memory, held by the returned :class:`Lease`, until
        the lease is released; a subscriber holds at most two at once.
        """
        sample = self._subscriber.receive()
        return None if sample is None else Lease(sample)

    @contextmanager
    def receive(self) -> Iterator[memoryview | None]:
        """Yield the next frame's bytes (None if none is waiting), valid inside the block."""
        lease = self.take()
        if lease is None:
            yield None
            return
        try:
            yield lease.view
        finally:
            lease.release()

    def close(self) -> None:
        """Release the port (the service goes with its last port)."""
        self._publisher = self._subscriber = self._service = None


class Lease:
    """A received frame, held in shared memory until :meth:`release`.

    Attributes:
        view: The frame's bytes, read-only (the mapping is: a write would crash).
            Nothing must read it, or any view made from it, after the release:
            iceoryx2 hands the memory to the next frame (findings 2.1, edge 2).
    """

    def __init__(self, sample: Any) -> None:
        self._sample = sample
        self.view: memoryview = sample.payload().as_memory_view().toreadonly()

    def release(self) -> None:
        """Hand the frame's memory back to the publisher (a second call does nothing)."""
        sample, self._sample = self._sample, None
        if sample is not None:
            sample.delete()
