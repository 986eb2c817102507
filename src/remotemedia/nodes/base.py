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
in the server process. A duplex node reports an input it cannot use with
:meth:`Node.input_failed`; the session goes on.

A node may own *child nodes* (:meth:`Node.make_child`), such as the coordinator's
Piper voice. The session builds a child by the same rules as a node of the manifest:
a model node gets a worker process of its own, with the server's supervision (restarts,
memory budget), though its parent runs in the server process. The parent initialises
its children in its ``initialize()`` and cleans them up in its ``cleanup()``.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeAlias, TypeVar

import attrs

from remotemedia.environments.spec import Environment
from remotemedia.errors import NodeError
from remotemedia.media import RuntimeData

__all__ = ["ANY", "ChildFactory", "Emit", "NoParams", "Node", "Output", "build_in_process"]

ProgressCallback: TypeAlias = Callable[[str], Awaitable[None]]
CountCallback: TypeAlias = Callable[[str, int], None]
"""Told of each :meth:`Node.count`: (event, amount)."""
Emit: TypeAlias = Callable[[RuntimeData], Awaitable[None]]
"""How a duplex node sends one output on (waits while the successors are full)."""
FailureCallback: TypeAlias = Callable[[str], Awaitable[None]]
"""Told that a duplex node's latest input failed, and why (see :meth:`Node.input_failed`)."""
ChildFactory: TypeAlias = Callable[[str, "type[Node[Any]]", Any], "Node[Any]"]
"""Builds a child node from (its node id, its node class, its params); see
:meth:`Node.make_child`."""

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
        environment: The Python and the packages this node type's worker needs, when
            the server's own do not do (a model library); None: the server's. A node
            with an environment always runs in a worker process, started with that
            environment's interpreter, so the server never imports its packages:
            import them inside :meth:`initialize`, not at the top of the module.
        node_id: The node's id in the manifest.
        params: This node's parameters.
        counts: What :meth:`count` counted.
        child_factory: How :meth:`make_child` builds a child; a session sets it (before
            ``initialize()``) to build children as it builds the manifest's nodes.
        on_input_failed: Set by a session on a duplex node: reports a failed input.
    """

    node_type: ClassVar[str]
    Params: ClassVar[type[Any]] = NoParams
    accepts: ClassVar[frozenset[str]] = ANY
    produces: ClassVar[frozenset[str]] = ANY
    worker_environment: ClassVar[Mapping[str, str]] = {}
    environment: ClassVar[Environment | None] = None

    def __init__(self, node_id: str, params: P) -> None:
        self.node_id = node_id
        self.params = params
        self.progress: ProgressCallback | None = None
        self.counts: collections.Counter[str] = collections.Counter()
        self.on_count: CountCallback | None = None
        self.child_factory: ChildFactory = build_in_process
        self.on_input_failed: FailureCallback | None = None

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

    def make_child(self, name: str, node_class: type[Node[Any]], params: Any) -> Node[Any]:
        """A node this node owns and calls itself (``process()``), such as a voice.

        In a session the child is built like a node of the manifest: a node type the
        executor registry places in a worker process (a model node, on a server) gets
        a worker of its own, supervised as any other (restarted when it fails,
        replaced over ``--worker-max-rss-mb``); outside a session it is built here,
        in-process. Either way it has the same interface, so the parent need not know.

        Call it from :meth:`initialize` (the session sets :attr:`child_factory` just
        before), then ``await child.initialize()`` there too, so that the child is
        ready (its model loaded) before the session reports this node ready; and
        ``await child.cleanup()`` in :meth:`cleanup`. The child's progress reports are
        this node's; what it counts reaches the metrics under its own node type.

        Args:
            name: The child's name, unique among this node's children; its node id is
                ``"<node_id>.<name>"``.
            node_class: The child's node type.
            params: The child's parameters (an instance of ``node_class.Params``).
        """
        child = self.child_factory(f"{self.node_id}.{name}", node_class, params)
        child.progress = self.report_progress
        return child

    async def input_failed(self, reason: str) -> None:
        """Report that the latest input of this duplex node failed; the session goes on.

        A duplex node cannot raise for one input without ending its ``run()``; this
        is how it says that an input produced no results, and why (a full sentence
        naming what to change). The caller gets a :class:`~remotemedia.errors.NodeError`
        for that input, as for an input a plain node's ``process()`` failed on.
        Outside a session the error is raised.
        """
        if self.on_input_failed is None:
            raise NodeError(self.node_id, self.node_type, reason)
        await self.on_input_failed(reason)

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


def build_in_process(node_id: str, node_class: type[Node[Any]], params: Any) -> Node[Any]:
    """The default :attr:`Node.child_factory`: the child runs in this process."""
    return node_class(node_id, params)
