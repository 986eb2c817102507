"""The node contract: what a node type declares and the hooks a session calls.

A node type is a subclass of :class:`Node` with a ``node_type`` name (as used in
manifests), a ``Params`` attrs class (fields made with :func:`remotemedia.params.param`),
and the kinds of data it accepts and produces. A session creates one instance per node
per session, so instance attributes are per-session state.

Hooks, in the order a session calls them:

1. ``await initialize()`` once, before any data (load models here).
2. ``process(data)`` for every input, in order. It may be a plain method or a
   coroutine, and returns None, one value, or a list of values; or it may be an async
   generator yielding values.
3. ``flush()`` once at end of input (plain or coroutine, same return convention):
   emit what is still buffered.
4. ``await cleanup()`` once, always, even after an error or cancellation.

A *duplex* node overrides ``run(inputs, emit)`` instead of ``process``/``flush``:
it reads its inputs and emits outputs whenever it likes, from tasks of its own (in
a nursery opened inside ``run``, so they end with it). A conversation coordinator
is one: a reply goes on while the user's speech keeps arriving. Duplex nodes run
in the server process.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeAlias, TypeVar

import attrs

from remotemedia.media import RuntimeData

__all__ = ["ANY", "Emit", "NoParams", "Node", "Output"]

ProgressCallback: TypeAlias = Callable[[str], Awaitable[None]]
CountCallback: TypeAlias = Callable[[str, int], None]
"""Told of each :meth:`Node.count`: (event, amount)."""
Emit: TypeAlias = Callable[[RuntimeData], Awaitable[None]]
"""How a duplex node sends one output on (waits while the successors are full)."""

Output: TypeAlias = RuntimeData | Sequence[RuntimeData] | None
"""What ``process`` and ``flush`` return: nothing, one value, or several values."""

ANY: frozenset[str] = frozenset({"audio", "text", "json", "binary", "image", "control"})
"""Every kind of data, for nodes that accept or produce anything."""


@attrs.frozen
class NoParams:
    """Params class of node types that take no parameters."""


P = TypeVar("P")


class Node(Generic[P]):
    """Base class of every node type.

    Subclasses set the class attributes and override :meth:`process`; the others
    have sensible defaults.

    Attributes:
        node_type: The name used in manifests (``node_type:``).
        Params: The attrs class of this node type's parameters.
        accepts: Kinds of data this node takes (``audio``, ``text``, ``json``, ...).
        produces: Kinds of data this node emits.
        worker_environment: Environment variables a worker process of this node type
            starts with, for libraries that read them once at load (e.g.
            ``OMP_NUM_THREADS``). A variable the server itself was started with wins.
        node_id: The node's id in the manifest.
        params: This node's parameters.
        counts: What :meth:`count` counted.
    """

    node_type: ClassVar[str]
    Params: ClassVar[type[Any]] = NoParams
    accepts: ClassVar[frozenset[str]] = ANY
    produces: ClassVar[frozenset[str]] = ANY
    worker_environment: ClassVar[Mapping[str, str]] = {}

    def __init__(self, node_id: str, params: P) -> None:
        self.node_id = node_id
        self.params = params
        self.progress: ProgressCallback | None = None
        self.counts: collections.Counter[str] = collections.Counter()
        self.on_count: CountCallback | None = None

    async def report_progress(self, message: str) -> None:
        """Tell the client how initialisation is going (a ``_status`` result over gRPC).

        Call it from :meth:`initialize` around slow steps such as loading a model;
        it works the same in-process and in a worker process.
        """
        if self.progress is not None:
            await self.progress(message)

    def count(self, event: str, amount: int = 1) -> None:
        """Count something the node did (``speculation_started``, ...).

        Kept in :attr:`counts`, and exported by the server as
        ``remotemedia_node_events_total{node_type, event}``.
        """
        self.counts[event] += amount
        if self.on_count is not None:
            self.on_count(event, amount)

    async def initialize(self) -> None:
        """Prepare the node before any data arrives (load models, open resources)."""

    def process(self, data: RuntimeData) -> Output | Awaitable[Output] | AsyncIterator[RuntimeData]:
        """Process one input and return (or yield) its outputs."""
        raise NotImplementedError(f"{type(self).__name__} must implement process()")

    def flush(self) -> Output | Awaitable[Output]:
        """Return whatever is still buffered; called once at end of input."""
        return None

    async def cleanup(self) -> None:
        """Release resources; always called once, also after errors."""

    async def run(self, inputs: AsyncIterator[RuntimeData], emit: Emit) -> None:
        """Drive the node yourself: read ``inputs`` to their end, ``emit`` outputs at any time.

        Override it (instead of :meth:`process` and :meth:`flush`) for a node whose
        outputs do not follow its inputs one by one. Return once the inputs have
        ended and the node's own work is done; outputs are tagged with the sequence
        number of the latest input.
        """
        raise NotImplementedError(f"{type(self).__name__} is not a duplex node")

    @classmethod
    def is_duplex(cls) -> bool:
        """True if the node type overrides :meth:`run` (and so runs in the server process)."""
        return cls.run is not Node.run

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this node type cannot run in this installation (None: it can).

        Node types with optional dependencies say what to install.
        """
        return None

    @classmethod
    def describe(cls) -> str:
        """Return the first line of the node type's docstring."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} id={self.node_id!r}>"
