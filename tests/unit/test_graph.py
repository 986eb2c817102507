"""Tests of compiling a manifest into a pipeline graph."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from remotemedia.errors import ManifestError
from remotemedia.manifest import manifest_from_dict
from remotemedia.nodes import NodeRegistry, NoParams
from remotemedia.nodes.audio.chunker import ChunkerParams
from remotemedia.nodes.audio.resample import ResampleParams
from remotemedia.session import Graph, compile_graph


def compile_(registry: NodeRegistry, ids: str, edges: Sequence[str] = (), **document: Any) -> Graph:
    """Compile PassThrough nodes named by the letters of ``ids``; edges are "ab" strings."""
    nodes = [{"id": node_id, "node_type": "PassThrough"} for node_id in ids]
    links = [{"from": edge[0], "to": edge[1]} for edge in edges]
    manifest = manifest_from_dict(
        {"version": "v1", "nodes": nodes, "connections": links, **document}
    )
    return compile_graph(manifest, registry)


def test_compile_graph_linear_chain(registry: NodeRegistry) -> None:
    graph = compile_(registry, "abc", ["ab", "bc"])
    assert list(graph.nodes) == ["a", "b", "c"]
    assert graph.sources == ("a",)
    assert graph.sinks == ("c",)
    assert graph.nodes["b"].successors == ("c",)
    assert graph.nodes["b"].predecessors == ("a",)


def test_compile_graph_single_node_is_source_and_sink(registry: NodeRegistry) -> None:
    graph = compile_(registry, "a")
    node = graph.nodes["a"]
    assert (node.is_source, node.is_sink) == (True, True)
    assert graph.sources == graph.sinks == ("a",)


def test_compile_graph_topological_order_ignores_manifest_order(registry: NodeRegistry) -> None:
    graph = compile_(registry, "dcba", ["cd", "bc", "ab"])
    assert list(graph.nodes) == ["a", "b", "c", "d"]
    assert (graph.sources, graph.sinks) == (("a",), ("d",))


def test_compile_graph_topological_order_is_stable(registry: NodeRegistry) -> None:
    graph = compile_(registry, "dcab", ["ab", "db", "ca"])
    assert list(graph.nodes) == ["d", "c", "a", "b"]
    assert graph.sources == ("d", "c")
    assert graph.sinks == ("b",)


def test_compile_graph_independent_nodes_keep_manifest_order(registry: NodeRegistry) -> None:
    graph = compile_(registry, "zyx")
    assert list(graph.nodes) == ["z", "y", "x"]
    assert graph.sources == graph.sinks == ("z", "y", "x")


def test_compile_graph_fan_out_and_fan_in(registry: NodeRegistry) -> None:
    graph = compile_(registry, "sabt", ["sb", "sa", "bt", "at"])
    assert graph.nodes["s"].successors == ("b", "a")
    assert graph.nodes["t"].predecessors == ("b", "a")
    order = list(graph.nodes)
    assert (order[0], sorted(order[1:3]), order[3]) == ("s", ["a", "b"], "t")
    assert (graph.sources, graph.sinks) == (("s",), ("t",))


def test_compile_graph_unconstrained_siblings_keep_manifest_order(registry: NodeRegistry) -> None:
    graph = compile_(registry, "sabt", ["sb", "sa", "bt", "at"])
    assert list(graph.nodes) == ["s", "a", "b", "t"]


def test_compile_graph_every_node_after_its_predecessors(registry: NodeRegistry) -> None:
    edges = ["fa", "ea", "ab", "cb", "bd", "ed", "fc"]
    graph = compile_(registry, "abcdef", edges)
    position = {node_id: i for i, node_id in enumerate(graph.nodes)}
    assert sorted(position) == list("abcdef")
    assert all(position[edge[0]] < position[edge[1]] for edge in edges)


def test_compile_graph_deduplicates_repeated_connections(registry: NodeRegistry) -> None:
    graph = compile_(registry, "ab", ["ab", "ab", "ab"])
    assert graph.nodes["a"].successors == ("b",)
    assert graph.nodes["b"].predecessors == ("a",)
    assert list(graph.nodes) == ["a", "b"]


def test_compile_graph_carries_name_type_and_structured_params(registry: NodeRegistry) -> None:
    manifest = manifest_from_dict(
        {
            "version": "v1",
            "metadata": {"name": "my-pipe"},
            "nodes": [
                {"id": "r", "node_type": "FastResampleNode", "params": {"quality": "high"}},
                {"id": "c", "node_type": "AudioChunkerNode", "params": {"chunkSize": 256}},
                {"id": "p", "node_type": "PassThrough", "params": None},
            ],
            "connections": [{"from": "r", "to": "c"}, {"from": "c", "to": "p"}],
        }
    )
    graph = compile_graph(manifest, registry)
    assert graph.name == "my-pipe"
    assert [n.node_type for n in graph.nodes.values()] == [
        "FastResampleNode",
        "AudioChunkerNode",
        "PassThrough",
    ]
    assert graph.nodes["r"].params == ResampleParams(quality="High")
    assert graph.nodes["c"].params == ChunkerParams(chunk_size=256)
    assert graph.nodes["p"].params == NoParams()


def test_compile_graph_name_defaults_to_empty(registry: NodeRegistry) -> None:
    assert compile_(registry, "a").name == ""


@pytest.mark.parametrize(
    ("ids", "edges", "path", "message"),
    [
        ("ab", ["ab", "ba"], "$.connections[1]", "connections form a cycle: a -> b -> a;"),
        ("aa", [], "$.nodes[1].id", "duplicate node id 'a' (first used at $.nodes[0]);"),
        ("a", ["ax"], "$.connections[0].to", "connection refers to unknown node 'x'."),
        ("", [], "$.nodes", "a pipeline needs at least one node."),
    ],
)
def test_compile_graph_rejects_invalid_manifest(
    registry: NodeRegistry, ids: str, edges: list[str], path: str, message: str
) -> None:
    with pytest.raises(ManifestError) as info:
        compile_(registry, ids, edges)
    [problem] = info.value.problems
    assert problem.path == path
    assert problem.message.startswith(message)


def test_compile_graph_rejects_bad_params_and_type_together(registry: NodeRegistry) -> None:
    manifest = manifest_from_dict(
        {
            "version": "v1",
            "nodes": [
                {"id": "c", "node_type": "AudioChunkerNode", "params": {"chunk_size": 0}},
                {"id": "x", "node_type": "Mystery"},
            ],
        }
    )
    with pytest.raises(ManifestError) as info:
        compile_graph(manifest, registry)
    assert [(p.path, p.message.split(".")[0]) for p in info.value.problems] == [
        ("$.nodes[0].params.chunk_size", "must be at least 1 (and at most 65536), got 0"),
        ("$.nodes[1].node_type", "unknown node type 'Mystery'"),
    ]
    assert str(info.value).startswith("The pipeline manifest has 2 problems:")
