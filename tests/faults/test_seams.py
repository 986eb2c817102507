"""The fault suite runs the code users run: a plan that never fires changes nothing.

Each scenario runs twice: as a server runs (no seams at all) and under the kit's
seams with a plan holding a fault at every site it can reach that never comes due.
Both runs must give the same results and take the same fast paths: the request
handed straight to the session (``deliver``), the response written straight to the
wire (``send_now``), the worker's event read from the buffer without waiting. Before
the seams, a process-global plan switched each of these off (three
``faults.installed()`` branches), so a plan run took none of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from remotemedia.executors.link import WorkerLink
from remotemedia.faults import ACTIONS_AT, NODE_SITES, Action, Fault, FaultPlan, Site
from remotemedia.service.seams import Seams
from remotemedia.service.wire import Wire
from remotemedia.testing.faults import Trace, Transport, run_scenario
from remotemedia.testing.seams import WireWrapper
from tests.faults import scenarios as catalogue
from tests.faults.nodes import registry

NEVER = 10**9
"""An occurrence no scenario reaches."""


def never_plan(node_ids: tuple[str, ...], transport: Transport) -> FaultPlan:
    """A fault at every site the scenario reaches, none of which ever comes due."""
    faults = []
    for site in sorted(Site, key=lambda site: site.value):
        if site in (Site.GRPC_RECEIVE, Site.GRPC_SEND) and transport != "grpc":
            continue
        kind = sorted(ACTIONS_AT[site], key=lambda kind: kind.value)[0]
        targets = node_ids if site in NODE_SITES else ("",)
        faults += [Fault(site, NEVER, Action(kind), node_id=node) for node in targets]
    return FaultPlan(tuple(faults))


class CountingWire(WireWrapper):
    """A call's wire (however wrapped) that counts what the runner's fast paths took."""

    def __init__(self, real: Wire) -> None:
        super().__init__(real)
        self.sent_now = 0
        self.delivered = 0

    def delivering(self, data: bytes) -> bool:
        taken = super().delivering(data)
        self.delivered += taken
        return taken

    def send_now(self, data: bytes) -> bool:
        written = super().send_now(data)
        self.sent_now += written
        return written


@attrs.define
class Paths:
    """The fast paths a run took, seen through seams around whatever it was built with."""

    links: list[WorkerLink] = attrs.Factory(list)
    wires: list[CountingWire] = attrs.Factory(list)

    def watch(self, seams: Seams) -> Seams:
        def link(real: WorkerLink, node_id: str, kill: Callable[[], Awaitable[None]]) -> Any:
            self.links.append(real)  # the real link: its own count of buffered events
            return seams.link(real, node_id, kill)

        def wire(real: Wire) -> Wire:
            counting = CountingWire(seams.wire(real))
            self.wires.append(counting)
            return counting

        return attrs.evolve(seams, link=link, wire=wire)

    @property
    def buffered(self) -> int:
        return sum(link.buffered for link in self.links)

    @property
    def sent_now(self) -> int:
        return sum(wire.sent_now for wire in self.wires)

    @property
    def delivered(self) -> int:
        return sum(wire.delivered for wire in self.wires)


async def twice(
    transport: Transport, process_types: frozenset[str] = frozenset()
) -> tuple[tuple[Trace, Paths], tuple[Trace, Paths]]:
    """The chain scenario as a server runs it, then under a plan that never fires."""
    node_ids = tuple(node["id"] for node in catalogue.CHAIN["nodes"])
    runs = []
    for plan in (None, never_plan(node_ids, transport)):
        paths = Paths()
        trace = await run_scenario(
            catalogue.CHAIN,
            catalogue.INPUTS,
            plan,
            transport=transport,
            process_types=process_types,
            registry=registry(),
            bystander=False,
            observe=paths.watch,
        )
        assert trace.ending == "closed", trace
        assert not trace.leaks, trace.leaks
        runs.append((trace, paths))
    return runs[0], runs[1]


def test_the_never_plan_has_a_fault_at_every_site() -> None:
    plan = never_plan(("a",), "grpc")
    assert {fault.site for fault in plan.faults} == set(Site)


async def test_inprocess_run_is_the_same_with_a_plan_that_never_fires(
    autojump_clock: trio.testing.MockClock,
) -> None:
    (bare, bare_paths), (planned, planned_paths) = await twice("inprocess")
    assert planned.results() == bare.results()
    assert [e for e in planned.events if e.kind == "fired"] == []
    # Under the autojump clock a run repeats exactly: the same counts, not just some.
    assert bare_paths.sent_now > 0
    assert planned_paths.sent_now == bare_paths.sent_now


@pytest.mark.slow
async def test_worker_run_takes_the_buffered_path_with_a_plan_that_never_fires() -> None:
    with trio.fail_after(60):
        (bare, bare_paths), (planned, planned_paths) = await twice(
            "inprocess", frozenset({"FaultWords", "FaultUpper"})
        )
    assert planned.results() == bare.results()
    # Real processes: how many events share a read is up to timing; that some do
    # (several outputs per input) is not, with a plan or without.
    assert bare_paths.buffered > 0
    assert planned_paths.buffered > 0


@pytest.mark.slow
async def test_grpc_run_takes_the_direct_paths_with_a_plan_that_never_fires() -> None:
    with trio.fail_after(60):
        (bare, bare_paths), (planned, planned_paths) = await twice("grpc")
    assert planned.results() == bare.results()
    for paths in (bare_paths, planned_paths):
        assert paths.delivered > 0, "no request went straight to its session"
        assert paths.sent_now > 0, "no response went straight into h2"
