"""Running a session in tests: numbered texts in, every result out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio

from remotemedia import Text, builtin_registry
from remotemedia.executors.process import WorkerSettings, default_namespace
from remotemedia.manifest import manifest_from_dict
from remotemedia.service.seams import NO_SEAMS, Seams
from remotemedia.session import Result, compile_graph, open_session


async def run_texts(
    manifest: Mapping[str, Any], inputs: int, seams: Seams = NO_SEAMS
) -> list[Result]:
    """Send Text("0") .. Text(str(inputs - 1)) and end the input; every result, in order.

    ``seams`` wrap its nodes and its workers' links (a fault kit's).
    """
    registry = builtin_registry()
    graph = compile_graph(manifest_from_dict(dict(manifest)), registry)
    workers = WorkerSettings(default_namespace(), link_seam=seams.link, on_event=seams.on_event)
    async with (
        open_session(graph, registry, workers=workers, node_seam=seams.node) as session,
        trio.open_nursery() as nursery,
    ):

        async def feed() -> None:
            for index in range(inputs):
                await session.send(Text(str(index)))
            await session.send_eof()

        nursery.start_soon(feed)
        return [result async for result in session]
