"""The fault scenarios: every site x action that makes sense, named ones, seeded draws.

Three families, each a list of :class:`~remotemedia.testing.faults.Scenario` built the
same way on every run (ids and plans depend only on the seeds):

- ``inprocess-*``: in-process nodes through the StreamPipeline service, under
  Trio's autojump clock (milliseconds each): a grid of every node site x action x
  node x occurrence, then seeded random plans of one or two faults.
- ``worker-*``: a node in a real worker process (real shared memory, real
  SIGKILL): the named cases the issue lists, then seeded random plans.
- ``grpc-*``: the real gRPC server on a loopback socket: client disconnect, a
  consumer that stops reading, SIGTERM while workers start, corrupt messages.

``FIXED_SEEDS`` are the draws CI always runs; :func:`fresh` adds the draws of one
more seed (CI picks it at random and prints it).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

from remotemedia.config import Limits, WorkerConfig
from remotemedia.faults import NODE_SITES
from remotemedia.media import Text
from remotemedia.testing.faults import (
    SCENARIO_LIMITS,
    SCENARIO_WORKERS,
    Action,
    ActionKind,
    Fault,
    FaultPlan,
    Scenario,
    Site,
)
from tests.faults.nodes import registry

FIXED_SEEDS = range(200)
"""Seeds of the random in-process draws CI always runs (worker/gRPC draws use fewer)."""

WORKER_SEEDS = 24
GRPC_SEEDS = 8
GRPC_REGRESSIONS = (66796,)
"""Fresh seeds that once failed, kept: 66796 disconnects at the first response sent
through the native transport's writer, which then had to start again (its cancel
scope was reused: RuntimeError)."""

CHAIN = {
    "version": "v1",
    "metadata": {"name": "chain"},
    "nodes": [
        {"id": "split", "node_type": "FaultWords"},
        {"id": "upper", "node_type": "FaultUpper"},
        {"id": "end", "node_type": "FaultEnder"},
    ],
    "connections": [{"from": "split", "to": "upper"}, {"from": "upper", "to": "end"}],
}
"""split (several outputs per input) -> upper -> end (an output at flush)."""

FAN = {
    "version": "v1",
    "metadata": {"name": "fan"},
    "nodes": [
        {"id": "split", "node_type": "FaultWords"},
        {"id": "up", "node_type": "FaultUpper"},
        {"id": "pass", "node_type": "PassThrough"},
    ],
    "connections": [{"from": "split", "to": "up"}, {"from": "split", "to": "pass"}],
}
"""split feeding two sinks."""

NODES = {"chain": ("split", "upper", "end"), "fan": ("split", "up", "pass")}
INPUTS = tuple(Text(f"a{index} b{index}") for index in range(4))

IN_NODE = (ActionKind.RAISE, ActionKind.HANG, ActionKind.DELAY)
NODE_STAGES = (Site.NODE_INITIALIZE, Site.NODE_PROCESS, Site.NODE_FLUSH, Site.NODE_CLEANUP)
WORKER_SITES = tuple(sorted(NODE_SITES, key=lambda site: site.value))
WORKER = frozenset({"FaultUpper"})
"""The node type run in a worker process in worker and gRPC scenarios (node ``upper``)."""

# Short worker deadlines keep hang scenarios short; a worker that hangs while
# loading is given up after 3 s.
FAST_WORKERS = WorkerConfig(stop_grace=0.5, call_timeout=2.0, start_timeout=3.0)
STALL_LIMITS = Limits(idle_timeout=2.0, max_duration=10.0, init_timeout=10.0)


def _fault(site: Site, occurrence: int, action: Action, node_id: str = "") -> Fault:
    return Fault(site, occurrence, action, node_id=node_id)


def _action(kind: ActionKind) -> Action:
    return Action(kind, delay_ms=50 if kind is ActionKind.DELAY else 0)


def inprocess_grid() -> list[Scenario]:
    """Every in-process node site x action x node of the chain, at occurrences 1 and 2."""
    scenarios = []
    for site, kind, node_id, occurrence in itertools.product(
        NODE_STAGES, IN_NODE, NODES["chain"], (1, 2)
    ):
        if site is Site.NODE_CLEANUP and kind is ActionKind.HANG and occurrence == 2:
            continue  # cleanup runs once per node: a second occurrence never comes
        plan = FaultPlan((_fault(site, occurrence, _action(kind), node_id),))
        name = f"inprocess-grid-{site.value}-{kind.value}-{node_id}-{occurrence}"
        scenarios.append(Scenario(name, CHAIN, INPUTS, plan, registry=registry()))
    for kind in (ActionKind.RAISE, ActionKind.DELAY):
        plan = FaultPlan((_fault(Site.ADMISSION, 1, _action(kind)),))
        name = f"inprocess-grid-admission-{kind.value}"
        scenarios.append(Scenario(name, CHAIN, INPUTS, plan, registry=registry()))
    return scenarios


def inprocess_random(seeds: Iterable[int]) -> list[Scenario]:
    """One or two faults drawn from each seed, on the chain (even) or the fan (odd)."""
    scenarios = []
    for seed in seeds:
        name = "chain" if seed % 2 == 0 else "fan"
        pipeline = CHAIN if name == "chain" else FAN
        plan = FaultPlan.random(
            seed,
            sites=(*NODE_STAGES, Site.ADMISSION),
            actions=IN_NODE,
            node_ids=NODES[name],
            faults=2 if seed % 3 == 2 else 1,
            max_occurrence=4,
        )
        scenarios.append(
            Scenario(f"inprocess-seed-{seed}", pipeline, INPUTS, plan, registry=registry())
        )
    return scenarios


def _worker(name: str, *faults: Fault, workers: WorkerConfig = SCENARIO_WORKERS) -> Scenario:
    return Scenario(
        f"worker-{name}",
        CHAIN,
        INPUTS,
        FaultPlan(faults),
        process_types=WORKER,
        workers=workers,
        registry=registry(),
    )


def _at(site: Site, occurrence: int, kind: ActionKind, **arguments: int) -> Fault:
    return Fault(site, occurrence, Action(kind, **arguments), node_id="upper")  # type: ignore[arg-type]


def worker_named() -> list[Scenario]:
    """The worker-process cases that must hold, each named for what it does."""
    k = ActionKind
    return [
        _worker("none"),
        _worker("sigkill-mid-input", _at(Site.NODE_PROCESS, 2, k.SIGKILL)),
        _worker("sigkill-first-input", _at(Site.NODE_PROCESS, 1, k.SIGKILL)),
        _worker("sigkill-mid-flush", _at(Site.NODE_FLUSH, 1, k.SIGKILL)),
        _worker("sigkill-while-loading", _at(Site.NODE_INITIALIZE, 1, k.SIGKILL)),
        _worker(
            "sigkill-while-loading-replacement",
            _at(Site.NODE_PROCESS, 2, k.SIGKILL),
            _at(Site.NODE_INITIALIZE, 2, k.SIGKILL),
        ),
        _worker("exit-0-while-busy", _at(Site.NODE_PROCESS, 3, k.EXIT, exit_code=0)),
        _worker("exit-3-while-busy", _at(Site.NODE_PROCESS, 2, k.EXIT, exit_code=3)),
        _worker("exit-0-while-flushing", _at(Site.NODE_FLUSH, 1, k.EXIT, exit_code=0)),
        _worker("hang-in-process", _at(Site.NODE_PROCESS, 2, k.HANG)),
        _worker("hang-in-flush", _at(Site.NODE_FLUSH, 1, k.HANG)),
        _worker("hang-in-initialize", _at(Site.NODE_INITIALIZE, 1, k.HANG), workers=FAST_WORKERS),
        _worker("raise-in-process", _at(Site.NODE_PROCESS, 2, k.RAISE)),
        _worker("raise-in-initialize", _at(Site.NODE_INITIALIZE, 1, k.RAISE)),
        _worker("raise-in-flush", _at(Site.NODE_FLUSH, 1, k.RAISE)),
        _worker("raise-in-cleanup", _at(Site.NODE_CLEANUP, 1, k.RAISE)),
        _worker("hang-in-cleanup", _at(Site.NODE_CLEANUP, 1, k.HANG)),
        _worker("delay-in-process", _at(Site.NODE_PROCESS, 1, k.DELAY, delay_ms=300)),
        _worker("corrupt-shm-frame", _at(Site.SHM_RECEIVE, 1, k.CORRUPT)),
        _worker("corrupt-shm-end-of-input", _at(Site.SHM_RECEIVE, 2, k.CORRUPT)),
        _worker("drop-shm-frame", _at(Site.SHM_RECEIVE, 3, k.DROP)),
        _worker("sigkill-at-shm-receive", _at(Site.SHM_RECEIVE, 2, k.SIGKILL)),
        _worker("corrupt-input-frame", _at(Site.SHM_PUBLISH, 2, k.CORRUPT)),
        _worker("drop-input-frame", _at(Site.SHM_PUBLISH, 2, k.DROP)),
        _worker("corrupt-control-message", _at(Site.LINK_RECEIVE, 1, k.CORRUPT)),
        _worker("truncated-control-message", _at(Site.LINK_RECEIVE, 1, k.CLOSE_LINK)),
        _worker("corrupt-config", _at(Site.LINK_SEND, 1, k.CORRUPT)),
        _worker("drop-config", _at(Site.LINK_SEND, 1, k.DROP), workers=FAST_WORKERS),
        _worker("close-link-at-config", _at(Site.LINK_SEND, 1, k.CLOSE_LINK)),
        _worker("corrupt-doorbell", _at(Site.DOORBELL_RECEIVE, 2, k.CORRUPT)),
        _worker("dropped-doorbell", _at(Site.DOORBELL_RECEIVE, 1, k.DROP)),
        _worker("dropped-input-doorbell", _at(Site.DOORBELL_SEND, 2, k.DROP)),
        _worker("corrupt-input-doorbell", _at(Site.DOORBELL_SEND, 2, k.CORRUPT)),
        _worker("close-link-at-input", _at(Site.DOORBELL_SEND, 3, k.CLOSE_LINK)),
        _worker(
            "two-faults-kill-then-corrupt",
            _at(Site.NODE_PROCESS, 1, k.SIGKILL),
            _at(Site.SHM_RECEIVE, 3, k.CORRUPT),
        ),
    ]


def worker_random(seeds: Iterable[int]) -> list[Scenario]:
    """One or two faults drawn from each seed, at any site of the worker node."""
    scenarios = []
    for seed in seeds:
        plan = FaultPlan.random(
            seed,
            sites=WORKER_SITES,
            node_ids=("upper",),
            faults=2 if seed % 4 == 3 else 1,
            max_occurrence=4,
        )
        scenarios.append(
            Scenario(
                f"worker-seed-{seed}",
                CHAIN,
                INPUTS,
                plan,
                process_types=WORKER,
                workers=FAST_WORKERS,
                registry=registry(),
            )
        )
    return scenarios


def _grpc(name: str, *faults: Fault, limits: Limits = SCENARIO_LIMITS) -> Scenario:
    return Scenario(
        f"grpc-{name}",
        CHAIN,
        INPUTS,
        FaultPlan(faults),
        transport="grpc",
        process_types=WORKER,
        limits=limits,
        registry=registry(),
    )


def grpc_named() -> list[Scenario]:
    """Faults at the server's own seams, over a real socket."""
    k = ActionKind
    return [
        _grpc("none"),
        _grpc("disconnect-while-results-in-flight", Fault(Site.GRPC_SEND, 3, Action(k.DISCONNECT))),
        _grpc("disconnect-after-init", Fault(Site.GRPC_RECEIVE, 1, Action(k.DISCONNECT))),
        _grpc(
            "consumer-stops-reading", Fault(Site.GRPC_SEND, 2, Action(k.STALL)), limits=STALL_LIMITS
        ),
        _grpc("sigterm-while-workers-start", Fault(Site.ADMISSION, 1, Action(k.SIGTERM_SERVER))),
        _grpc("sigterm-mid-stream", Fault(Site.GRPC_RECEIVE, 3, Action(k.SIGTERM_SERVER))),
        _grpc("corrupt-init", Fault(Site.GRPC_RECEIVE, 1, Action(k.CORRUPT))),
        _grpc("corrupt-chunk", Fault(Site.GRPC_RECEIVE, 3, Action(k.CORRUPT))),
        _grpc("delay-receive", Fault(Site.GRPC_RECEIVE, 2, Action(k.DELAY, delay_ms=200))),
        _grpc("delay-send", Fault(Site.GRPC_SEND, 2, Action(k.DELAY, delay_ms=200))),
        _grpc("admission-raises", Fault(Site.ADMISSION, 1, Action(k.RAISE))),
        _grpc(
            "two-faults-sigkill-and-delay",
            _at(Site.NODE_PROCESS, 2, k.SIGKILL),
            Fault(Site.GRPC_SEND, 3, Action(k.DELAY, delay_ms=100)),
        ),
    ]


def grpc_random(seeds: Iterable[int]) -> list[Scenario]:
    """A fault at a transport site and one at the worker node, drawn from each seed."""
    scenarios = []
    for seed in seeds:
        transport = FaultPlan.random(
            seed,
            sites=(Site.GRPC_RECEIVE, Site.GRPC_SEND),
            actions=(ActionKind.DELAY, ActionKind.CORRUPT, ActionKind.DISCONNECT),
            max_occurrence=5,
        )
        worker = FaultPlan.random(seed, sites=WORKER_SITES, node_ids=("upper",), max_occurrence=4)
        plan = FaultPlan(transport.faults + worker.faults, seed)
        scenarios.append(
            Scenario(
                f"grpc-seed-{seed}",
                CHAIN,
                INPUTS,
                plan,
                transport="grpc",
                process_types=WORKER,
                workers=FAST_WORKERS,
                registry=registry(),
            )
        )
    return scenarios


def fixed() -> list[Scenario]:
    """The scenarios CI always runs."""
    return [
        *inprocess_grid(),
        *inprocess_random(FIXED_SEEDS),
        *worker_named(),
        *worker_random(range(1000, 1000 + WORKER_SEEDS)),
        *grpc_named(),
        *grpc_random([*range(2000, 2000 + GRPC_SEEDS), *GRPC_REGRESSIONS]),
    ]


def fresh(seed: int) -> list[Scenario]:
    """The draws of one more seed: in-process, worker and gRPC."""
    return [*inprocess_random([seed]), *worker_random([seed]), *grpc_random([seed])]


def select(scenarios: Sequence[Scenario], pattern: str | None) -> list[Scenario]:
    """The scenarios whose id contains ``pattern`` (all without one)."""
    return [s for s in scenarios if pattern is None or pattern in s.name]
