"""Fault plans: which fault to inject, where and when, as data (sans-IO).

A :class:`FaultPlan` is a list of :class:`Fault`: at a :class:`Site` (a seam between
the runtime's parts), at the n-th time that site is reached (optionally only for
one node), perform an :class:`Action`. Plans are plain data: printable, saved as
JSON and loaded back, and drawn reproducibly from a seed, so a failing scenario is
replayed exactly from its seed or its JSON.

This module only decides; it does no I/O and imports no Trio. A plan is carried
out by the fault kit's seams (:mod:`remotemedia.testing.seams`): wrappers around the
runtime's real objects (nodes, worker links, the wire of each call) that ask a
:class:`FaultCounter` each time they reach a site; the runtime itself never asks,
so it runs the same code with and without a plan. The public kit around it (the
harness, the invariants) is :mod:`remotemedia.testing.faults`.

Rules:

1. Occurrences count from 1, per site and per node: ``Fault(NODE_PROCESS, 3, ...,
   node_id="asr")`` fires the third time node ``asr`` processes an input. Without a
   node id the count is over every node.
2. A fault fires at most once, and at most one fault fires each time a site is
   reached: of two faults due at the same moment, the first in the plan fires and
   the other never does.
3. Each site allows only the actions that make sense there (:data:`ACTIONS_AT`);
   a plan with any other is refused when it is built.
4. The same seed and the same arguments draw the same plan, on every machine.
"""

from __future__ import annotations

import enum
import json
import random
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

import attrs
import cattrs

from remotemedia.errors import RemoteMediaError

__all__ = [
    "ACTIONS_AT",
    "NODE_SITES",
    "Action",
    "ActionKind",
    "Fault",
    "FaultCounter",
    "FaultPlan",
    "FaultPlanError",
    "Site",
]


class FaultPlanError(RemoteMediaError):
    """A fault plan is invalid (an action a site cannot take, a bad occurrence, bad JSON)."""


class Site(enum.Enum):
    """A seam where a fault can be injected."""

    NODE_INITIALIZE = "node.initialize"
    NODE_PROCESS = "node.process"
    NODE_FLUSH = "node.flush"
    NODE_CLEANUP = "node.cleanup"
    LINK_SEND = "link.send"
    """A control message to or from a worker (config, ready, progress, fatal)."""
    LINK_RECEIVE = "link.receive"
    DOORBELL_SEND = "doorbell.send"
    """The wake-up byte that says a frame waits in shared memory."""
    DOORBELL_RECEIVE = "doorbell.receive"
    SHM_PUBLISH = "shm.publish"
    SHM_RECEIVE = "shm.receive"
    GRPC_RECEIVE = "grpc.receive"
    """A StreamPipeline message from the client, as the server reads it."""
    GRPC_SEND = "grpc.send"
    ADMISSION = "session.admission"


class ActionKind(enum.Enum):
    """What a fault does."""

    RAISE = "raise"
    SIGKILL = "sigkill"
    """SIGKILL the worker process the site runs in (or serves)."""
    HANG = "hang"
    DELAY = "delay"
    CORRUPT = "corrupt"
    """Flip bytes of the message or frame."""
    DROP = "drop"
    CLOSE_LINK = "close_link"
    """Close the worker's control socket (the other end sees EOF)."""
    EXIT = "exit"
    """The worker process exits with ``exit_code``."""
    DISCONNECT = "disconnect"
    """The client's connection is dropped."""
    STALL = "stall"
    """The client stops reading responses."""
    SIGTERM_SERVER = "sigterm_server"


_IN_NODE = {ActionKind.RAISE, ActionKind.HANG, ActionKind.DELAY}
_IN_WORKER = {ActionKind.SIGKILL, ActionKind.EXIT}
_ON_BYTES = {ActionKind.CORRUPT, ActionKind.DROP, ActionKind.DELAY}
_ON_LINK = _ON_BYTES | {ActionKind.CLOSE_LINK} | _IN_WORKER
_ON_CLIENT = {ActionKind.DISCONNECT, ActionKind.DELAY, ActionKind.SIGTERM_SERVER}

NODE_SITES = frozenset(
    site for site in Site if site.value.split(".")[0] in {"node", "link", "doorbell", "shm"}
)
"""Sites that belong to one node (its task, or its worker's link and shared memory)."""

ACTIONS_AT: dict[Site, frozenset[ActionKind]] = {
    Site.NODE_INITIALIZE: frozenset(_IN_NODE | _IN_WORKER),
    Site.NODE_PROCESS: frozenset(_IN_NODE | _IN_WORKER),
    Site.NODE_FLUSH: frozenset(_IN_NODE | _IN_WORKER),
    Site.NODE_CLEANUP: frozenset(_IN_NODE),
    Site.LINK_SEND: frozenset(_ON_LINK),
    Site.LINK_RECEIVE: frozenset(_ON_LINK),
    Site.DOORBELL_SEND: frozenset(_ON_LINK),
    Site.DOORBELL_RECEIVE: frozenset(_ON_LINK),
    Site.SHM_PUBLISH: frozenset(_ON_BYTES | _IN_WORKER),
    Site.SHM_RECEIVE: frozenset(_ON_BYTES | _IN_WORKER),
    Site.GRPC_RECEIVE: frozenset(_ON_CLIENT | {ActionKind.CORRUPT}),
    Site.GRPC_SEND: frozenset(_ON_CLIENT | {ActionKind.STALL}),
    Site.ADMISSION: frozenset({ActionKind.RAISE, ActionKind.DELAY, ActionKind.SIGTERM_SERVER}),
}
"""The actions each site can take (rule 3)."""

T = TypeVar("T")

_EXCEPTIONS = ("RuntimeError", "ValueError", "OSError", "MemoryError")


@attrs.frozen
class Action:
    """What a fault does, with its arguments.

    Attributes:
        kind: The action.
        exception: For RAISE: the name of a builtin exception to raise.
        delay_ms: For DELAY: how long.
        exit_code: For EXIT: the worker's exit status.
    """

    kind: ActionKind
    exception: str = "RuntimeError"
    delay_ms: int = attrs.field(default=0)
    exit_code: int = 0

    @delay_ms.validator
    def _check_delay(self, attribute: attrs.Attribute[int], value: int) -> None:
        if value < 0:
            raise FaultPlanError(f"Action delay_ms must be 0 or more, got {value}.")

    def to_json(self) -> str:
        """The action as JSON (what :meth:`from_json` reads back)."""
        return _dump(self)

    @classmethod
    def from_json(cls, text: str) -> Action:
        """Load an action saved by :meth:`to_json`.

        Raises:
            FaultPlanError: The text is not a valid action.
        """
        return _load(text, cls)

    def __str__(self) -> str:
        if self.kind is ActionKind.RAISE:
            return f"raise {self.exception}"
        if self.kind is ActionKind.DELAY:
            return f"delay {self.delay_ms} ms"
        if self.kind is ActionKind.EXIT:
            return f"exit {self.exit_code}"
        return str(self.kind.value)


@attrs.frozen
class Fault:
    """One fault: at ``site``, the ``occurrence``-th time (for ``node_id``), do ``action``.

    Raises:
        FaultPlanError: The site cannot take the action, or the occurrence is < 1.
    """

    site: Site
    occurrence: int
    action: Action
    node_id: str = ""

    def __attrs_post_init__(self) -> None:
        if self.occurrence < 1:
            raise FaultPlanError(
                f"Fault at {self.site.value}: occurrence must be 1 or more, got {self.occurrence}."
            )
        allowed = ACTIONS_AT[self.site]
        if self.action.kind not in allowed:
            names = ", ".join(sorted(kind.value for kind in allowed))
            raise FaultPlanError(
                f"Fault at {self.site.value} cannot {self.action.kind.value}; it can: {names}."
            )

    def __str__(self) -> str:
        node = f"[{self.node_id}]" if self.node_id else ""
        return f"{self.site.value}{node}#{self.occurrence}: {self.action}"


@attrs.frozen
class FaultPlan:
    """Faults to inject in one scenario, and the seed it was drawn from (if any).

    Attributes:
        faults: The faults, in priority order (rule 2).
        seed: The seed :meth:`random` drew it from; None for a plan written by hand.
    """

    faults: tuple[Fault, ...] = ()
    seed: int | None = None

    def __str__(self) -> str:
        faults = "; ".join(str(fault) for fault in self.faults) or "no faults"
        return f"seed {self.seed}: {faults}" if self.seed is not None else faults

    def to_json(self) -> str:
        """The plan as JSON (what :meth:`from_json` reads back)."""
        return _dump(self)

    @classmethod
    def from_json(cls, text: str) -> FaultPlan:
        """Load a plan saved by :meth:`to_json`.

        Raises:
            FaultPlanError: The text is not a valid plan.
        """
        return _load(text, cls)

    @classmethod
    def random(
        cls,
        seed: int,
        *,
        sites: Iterable[Site] = tuple(Site),
        actions: Iterable[ActionKind] = tuple(ActionKind),
        node_ids: Sequence[str] = ("",),
        faults: int = 1,
        max_occurrence: int = 5,
    ) -> FaultPlan:
        """Draw a plan reproducibly from ``seed`` (rule 4).

        Args:
            seed: The seed; the same seed and arguments give the same plan.
            sites: Where faults may go.
            actions: Which actions they may take (each site takes those of these
                it can; a site that can take none is not drawn).
            node_ids: Which node each fault at a node's site (:data:`NODE_SITES`) is
                limited to ("" for any node).
            faults: How many faults.
            max_occurrence: The latest occurrence a fault may wait for.
        """
        rng = random.Random(seed)
        wanted = set(actions)
        choices = [
            site for site in sorted(sites, key=lambda site: site.value) if ACTIONS_AT[site] & wanted
        ]
        if not choices:
            raise FaultPlanError("No site can take any of the actions asked for.")
        drawn = []
        for _ in range(faults):
            site = rng.choice(choices)
            kind = rng.choice(sorted(ACTIONS_AT[site] & wanted, key=lambda kind: kind.value))
            action = Action(
                kind,
                exception=rng.choice(_EXCEPTIONS),
                delay_ms=rng.choice((1, 10, 50, 200)) if kind is ActionKind.DELAY else 0,
                exit_code=rng.choice((0, 1, 3)) if kind is ActionKind.EXIT else 0,
            )
            node = rng.choice(list(node_ids)) if site in NODE_SITES else ""
            drawn.append(Fault(site, rng.randint(1, max_occurrence), action, node_id=node))
        return cls(tuple(drawn), seed)


class FaultCounter:
    """Counts how often each site is reached and says when a fault fires (rules 1, 2).

    Args:
        plan: The plan to carry out.
    """

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self.events: list[tuple[str, str]] = []
        """Lifecycle events noted while the plan ran (workers started, failed), in order."""
        self._hits: dict[tuple[Site, str], int] = {}
        self._fired: dict[int, None] = {}  # plan indexes, in the order they fired

    def reached(self, site: Site, node_id: str = "") -> Action | None:
        """Note that ``site`` was reached (for ``node_id``); the action to take now, if any."""
        counts = [(site, "")] if not node_id else [(site, ""), (site, node_id)]
        for key in counts:
            self._hits[key] = self._hits.get(key, 0) + 1
        for index, fault in enumerate(self.plan.faults):
            if index in self._fired or fault.site is not site:
                continue
            if fault.node_id and fault.node_id != node_id:
                continue
            if self._hits[(site, fault.node_id)] == fault.occurrence:
                self._fired[index] = None
                return fault.action
        return None

    @property
    def fired(self) -> list[Fault]:
        """The faults that have fired so far, in the order they fired."""
        return [self.plan.faults[index] for index in self._fired]


def _build_converter() -> cattrs.Converter:
    # Not detailed: a FaultPlanError from a Fault or an enum reaches the caller as it is.
    converter = cattrs.Converter(detailed_validation=False)
    converter.register_unstructure_hook(Site, lambda site: site.value)
    converter.register_structure_hook(Site, lambda value, _: _enum(Site, value))
    converter.register_unstructure_hook(ActionKind, lambda kind: kind.value)
    converter.register_structure_hook(ActionKind, lambda value, _: _enum(ActionKind, value))
    return converter


def _dump(value: Any) -> str:
    return json.dumps(_CONVERTER.unstructure(value), sort_keys=True)


def _load(text: str, cls: type[T]) -> T:
    try:
        loaded: T = _CONVERTER.structure(json.loads(text), cls)
    except FaultPlanError:
        raise
    except (ValueError, TypeError, KeyError, cattrs.BaseValidationError) as error:
        raise FaultPlanError(f"Not a fault plan: {error}") from None
    return loaded


def _enum(cls: Any, value: Any) -> Any:
    try:
        return cls(value)
    except ValueError:
        known = ", ".join(member.value for member in cls)
        raise FaultPlanError(f"{value!r} is not a {cls.__name__}; use one of: {known}.") from None


_CONVERTER = _build_converter()
