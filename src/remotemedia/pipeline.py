"""The in-process API: open a pipeline from a manifest, send inputs, read results.

For Trio code::

    async with remotemedia.open_pipeline("vad") as pipeline:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed, pipeline)      # send(...) then send_eof()
            async for result in pipeline:
                print(result.node_id, result.sequence, result.data)

For scripts, :func:`run` does all of that in one call and returns the results.

Params that a node type does not declare are ignored, as the original runtime ignored
them, and each is logged as a warning on the ``remotemedia.pipeline`` logger (Python
prints warnings to stderr when logging is not configured); :func:`check_pipeline`
returns them instead, for tools that show them their own way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeAlias

import trio

from remotemedia.errors import ManifestError, Problem
from remotemedia.examples import example_names, example_path
from remotemedia.executors.registry import ExecutorRegistry
from remotemedia.manifest import (
    Manifest,
    ParamWarning,
    check_manifest,
    load_manifest,
    manifest_from_dict,
)
from remotemedia.media import RuntimeData
from remotemedia.nodes import NodeRegistry, default_registry
from remotemedia.session import Graph, Result, Session, compile_graph, open_session
from remotemedia.session.session import DEFAULT_EDGE_CAPACITY

__all__ = [
    "ManifestSource",
    "check_pipeline",
    "compile_pipeline",
    "open_pipeline",
    "resolve_manifest",
    "run",
    "run_pipeline",
]

ManifestSource: TypeAlias = str | os.PathLike[str] | Mapping[str, Any] | Manifest
"""A manifest file path, the name of a bundled example, a parsed mapping, or a Manifest."""

logger = logging.getLogger(__name__)


def resolve_manifest(source: ManifestSource, registry: NodeRegistry | None = None) -> Manifest:
    """Load a manifest from any :data:`ManifestSource`, checking it fully.

    A string that is not an existing file but is the name of a bundled example
    (``vad``, ``utterances``, ...) loads that example.

    Raises:
        ManifestError: Every problem found, with its path.
    """
    registry = registry or default_registry()
    if isinstance(source, Manifest):
        compile_graph(source, registry)  # validates; raises ManifestError
        return source
    if isinstance(source, Mapping):
        return manifest_from_dict(source, catalog=registry)
    path = Path(os.fspath(source))
    if not path.exists() and isinstance(source, str):
        bundled = example_path(source)
        if bundled is not None:
            path = bundled
        elif os.sep not in source and not path.suffix:
            names = ", ".join(example_names())
            raise ManifestError(
                [
                    Problem(
                        "$",
                        f"no file '{source}' and no bundled example of that name "
                        f"(bundled examples: {names}).",
                    )
                ],
                source=source,
            )
    return load_manifest(path, catalog=registry)


def check_pipeline(
    source: ManifestSource, registry: NodeRegistry | None = None
) -> tuple[Graph, list[ParamWarning]]:
    """Load, validate and compile a manifest; also return its warnings.

    Returns:
        The graph, and one warning for each param that a node type does not declare
        (such params are ignored).

    Raises:
        ManifestError: Every problem found, with its path.
    """
    registry = registry or default_registry()
    manifest = resolve_manifest(source, registry)
    graph = compile_graph(manifest, registry)
    return graph, check_manifest(manifest, registry).warnings


def compile_pipeline(source: ManifestSource, registry: NodeRegistry | None = None) -> Graph:
    """Load, validate and compile a manifest into a graph ready to run.

    Params that a node type does not declare are ignored, each with a warning logged.

    Raises:
        ManifestError: Every problem found, with its path.
    """
    graph, warnings = check_pipeline(source, registry)
    for warning in warnings:
        logger.warning("Node '%s': %s", warning.node_id, warning)
    return graph


@asynccontextmanager
async def open_pipeline(
    source: ManifestSource,
    *,
    registry: NodeRegistry | None = None,
    edge_capacity: int = DEFAULT_EDGE_CAPACITY,
    executors: ExecutorRegistry | None = None,
) -> AsyncIterator[Session]:
    """Open a running pipeline for Trio code.

    Args:
        source: The manifest (see :data:`ManifestSource`).
        registry: The node types to use; default: the built-in ones.
        edge_capacity: Items each edge buffers before its producer waits.
        executors: Which nodes run in worker processes; default: model nodes
            (Whisper, Piper, ...) do, DSP nodes run in-process.

    Yields:
        The running :class:`~remotemedia.session.Session`.

    Raises:
        ManifestError: The manifest has problems (all are listed).
        NodeError: A node failed to initialise or to process an input.
    """
    registry = registry or default_registry()
    graph = compile_pipeline(source, registry)
    async with open_session(
        graph,
        registry,
        edge_capacity=edge_capacity,
        executors=executors or ExecutorRegistry.with_defaults(),
    ) as session:
        yield session


async def run_pipeline(
    source: ManifestSource,
    inputs: Iterable[RuntimeData] | AsyncIterable[RuntimeData],
    *,
    node_id: str | None = None,
    registry: NodeRegistry | None = None,
) -> list[Result]:
    """Run every input through a pipeline, end the input, and return all results.

    Args:
        source: The manifest (see :data:`ManifestSource`).
        inputs: The inputs, in order; sequence numbers are 0, 1, 2, ...
        node_id: The node to send inputs to; by default the source nodes.
        registry: The node types to use; default: the built-in ones.

    Returns:
        Every result, in the order the pipeline produced them.
    """
    results: list[Result] = []
    async with open_pipeline(source, registry=registry) as pipeline:

        async def feed() -> None:
            if isinstance(inputs, AsyncIterable):
                async for item in inputs:
                    await pipeline.send(item, node_id=node_id)
            else:
                for item in inputs:
                    await pipeline.send(item, node_id=node_id)
            await pipeline.send_eof()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            results.extend([result async for result in pipeline])
    return results


def run(
    source: ManifestSource,
    inputs: Iterable[RuntimeData],
    *,
    node_id: str | None = None,
    registry: NodeRegistry | None = None,
) -> list[Result]:
    """Run a pipeline over some inputs from synchronous code; see :func:`run_pipeline`."""
    return trio.run(lambda: run_pipeline(source, inputs, node_id=node_id, registry=registry))
