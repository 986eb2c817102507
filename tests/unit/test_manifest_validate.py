"""Tests of manifest validation against a node catalog: graph rules and params."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from remotemedia.errors import ManifestError
from remotemedia.manifest import (
    check_manifest,
    load_manifest,
    manifest_from_dict,
    parse_manifest,
    validate_manifest,
)
from remotemedia.manifest.validate import find_cycles
from remotemedia.nodes import NodeRegistry
from remotemedia.nodes.audio.vad import VADParams
from remotemedia.nodes.base import NoParams
from tests.manifests import FOUR_PROBLEMS


def manifest(*nodes: Any, connections: Any = (), version: str = "v1") -> dict[str, Any]:
    """A manifest document; a node given as a string is a PassThrough with that id."""
    specs = [{"id": n, "node_type": "PassThrough"} if isinstance(n, str) else n for n in nodes]
    links = [{"from": a, "to": b} for a, b in connections]
    return {"version": version, "nodes": specs, "connections": links}


def problems_of(
    document: dict[str, Any], registry: NodeRegistry, *, strict_params: bool = False
) -> list[tuple[str, str]]:
    with pytest.raises(ManifestError) as info:
        manifest_from_dict(document, catalog=registry, strict_params=strict_params)
    return [(p.path, p.message) for p in info.value.problems]


def only_problem(
    document: dict[str, Any], registry: NodeRegistry, *, strict_params: bool = False
) -> tuple[str, str]:
    problems = problems_of(document, registry, strict_params=strict_params)
    assert len(problems) == 1, problems
    return problems[0]


def test_check_manifest_valid_manifest_has_no_problems_and_params(registry: NodeRegistry) -> None:
    vad = {"id": "vad", "node_type": "SileroVADNode", "params": {"threshold": 0.7}}
    checked = check_manifest(
        manifest_from_dict(manifest("a", vad, connections=[("a", "vad")])), registry
    )
    assert checked.problems == []
    assert checked.params == {"a": NoParams(), "vad": VADParams(threshold=0.7)}


def test_validate_manifest_returns_checked_manifest(registry: NodeRegistry) -> None:
    checked = validate_manifest(
        manifest_from_dict(manifest("a", "b", connections=[("a", "b")])), registry
    )
    assert set(checked.params) == {"a", "b"}


def test_validate_manifest_raises_with_every_problem(registry: NodeRegistry) -> None:
    unchecked = manifest_from_dict(manifest("a", "a", version="v2"))
    with pytest.raises(ManifestError) as info:
        validate_manifest(unchecked, registry)
    assert [p.path for p in info.value.problems] == ["$.version", "$.nodes[1].id"]
    assert str(info.value).startswith("The pipeline manifest has 2 problems:\n")


def test_validate_unsupported_version(registry: NodeRegistry) -> None:
    assert only_problem(manifest("a", version="v2"), registry) == (
        "$.version",
        "unsupported manifest version 'v2'; use \"v1\".",
    )


def test_validate_no_nodes(registry: NodeRegistry) -> None:
    assert only_problem(manifest(), registry) == ("$.nodes", "a pipeline needs at least one node.")


def test_validate_missing_nodes_key_reported_once(registry: NodeRegistry) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest("version: v1\n", catalog=registry)
    assert [p.path for p in info.value.problems] == ["$.nodes"]


def test_validate_missing_version_reported_once(registry: NodeRegistry) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest("nodes: [{id: a, node_type: PassThrough}]\n", catalog=registry)
    assert [p.path for p in info.value.problems] == ["$.version"]


@pytest.mark.parametrize("node_id", ["", "   "])
def test_validate_empty_node_id(registry: NodeRegistry, node_id: str) -> None:
    assert only_problem(manifest(node_id), registry) == (
        "$.nodes[0].id",
        "node id must not be empty.",
    )


@pytest.mark.parametrize(
    ("node_id", "what"),
    [
        ("a\x00b", "the control character U+0000"),
        ("vad\n", "the control character U+000A"),
        ("a\x7fb", "the control character U+007F"),
        ("a\x85b", "the control character U+0085"),
        ("a\ud800b", "the unpaired surrogate U+D800"),
    ],
)
def test_validate_node_id_with_unprintable_character(
    registry: NodeRegistry, node_id: str, what: str
) -> None:
    # The connection from it is not reported as dangling: the node is there.
    document = manifest(node_id, "b", connections=[(node_id, "b")])
    assert only_problem(document, registry) == (
        "$.nodes[0].id",
        f"node id {node_id!r} contains {what}; use only printable characters in node ids.",
    )


@pytest.mark.parametrize("node_id", ["ノード🎤", "x" * 300, "👨\u200d👩\u200d👧", " a/b c "])
def test_validate_accepts_any_printable_node_id(registry: NodeRegistry, node_id: str) -> None:
    checked = check_manifest(manifest_from_dict(manifest(node_id)), registry)
    assert checked.problems == []


def test_validate_duplicate_id_names_first_index(registry: NodeRegistry) -> None:
    assert only_problem(manifest("a", "b", "c", "b"), registry) == (
        "$.nodes[3].id",
        "duplicate node id 'b' (first used at $.nodes[1]); give every node a unique id.",
    )


@pytest.mark.parametrize(
    ("node_type", "hint"),
    [
        ("SileroVADNod", " Did you mean 'SileroVADNode'?"),
        ("passthrough", " Did you mean 'PassThrough'?"),
        ("AudioChunker", " Did you mean 'AudioChunkerNode'?"),
        ("Zzyzx", ""),
    ],
)
def test_validate_unknown_node_type_suggests_closest(
    registry: NodeRegistry, node_type: str, hint: str
) -> None:
    document = manifest("a", {"id": "b", "node_type": node_type})
    assert only_problem(document, registry) == (
        "$.nodes[1].node_type",
        f"unknown node type '{node_type}'.{hint} "
        "Run `remotemedia nodes` to list the available types.",
    )


@pytest.mark.parametrize(
    ("edge", "path", "message"),
    [
        (
            ("resampler", "b"),
            "$.connections[0].from",
            "unknown node 'resampler'. Did you mean 'resample'?",
        ),
        (("b", "chunkr"), "$.connections[0].to", "unknown node 'chunkr'. Did you mean 'chunker'?"),
        (("b", "output"), "$.connections[0].to", "unknown node 'output'."),
    ],
)
def test_validate_dangling_connection(
    registry: NodeRegistry, edge: tuple[str, str], path: str, message: str
) -> None:
    document = manifest("resample", "chunker", "b", connections=[edge])
    assert only_problem(document, registry) == (path, f"connection refers to {message}")


def test_validate_connection_with_both_ends_dangling(registry: NodeRegistry) -> None:
    assert problems_of(manifest("a", connections=[("x", "y")]), registry) == [
        ("$.connections[0].from", "connection refers to unknown node 'x'."),
        ("$.connections[0].to", "connection refers to unknown node 'y'."),
    ]


def test_validate_connection_to_unparsed_node_is_not_dangling(registry: NodeRegistry) -> None:
    broken = {"id": "b", "node_type": "PassThrough", "is_streaming": "yes"}
    assert only_problem(manifest("a", broken, connections=[("a", "b")]), registry) == (
        "$.nodes[1].is_streaming",
        "expected a boolean, got a string 'yes'.",
    )


@pytest.mark.parametrize(
    ("nodes", "edges", "path", "loop"),
    [
        (["a"], [("a", "a")], "$.connections[0]", "a -> a"),
        (["a", "b"], [("a", "b"), ("b", "a")], "$.connections[1]", "a -> b -> a"),
        (
            ["x", "y", "z"],
            [("y", "z"), ("z", "x"), ("x", "y")],
            "$.connections[1]",
            "x -> y -> z -> x",
        ),
        (["s", "a", "b"], [("s", "a"), ("a", "b"), ("b", "a")], "$.connections[2]", "a -> b -> a"),
    ],
)
def test_validate_cycle_names_nodes_in_order(
    registry: NodeRegistry, nodes: list[str], edges: list[tuple[str, str]], path: str, loop: str
) -> None:
    assert only_problem(manifest(*nodes, connections=edges), registry) == (
        path,
        f"connections form a cycle: {loop}; pipelines must be acyclic.",
    )


def test_validate_reports_each_disjoint_cycle(registry: NodeRegistry) -> None:
    edges = [("a", "a"), ("b", "c"), ("c", "d"), ("d", "b")]
    problems = problems_of(manifest("a", "b", "c", "d", connections=edges), registry)
    assert [(path, message.split(";")[0]) for path, message in problems] == [
        ("$.connections[0]", "connections form a cycle: a -> a"),
        ("$.connections[3]", "connections form a cycle: b -> c -> d -> b"),
    ]


@pytest.mark.parametrize("strict_params", [False, True])
@pytest.mark.parametrize(
    ("params", "path", "message"),
    [
        (
            {"threshold": 1.5},
            "$.nodes[2].params.threshold",
            "must be at most 1 (and at least 0), got 1.5.",
        ),
        (
            {"speechPadMs": "30"},
            "$.nodes[2].params.speechPadMs",
            "expected integer, got a string '30'.",
        ),
        (
            {"threshold": 0.3, "neg_threshold": 0.4},
            "$.nodes[2].params",
            "neg_threshold (0.4) must not",
        ),
    ],
)
def test_validate_param_errors_have_full_paths(
    registry: NodeRegistry, params: Any, path: str, message: str, strict_params: bool
) -> None:
    vad = {"id": "vad", "node_type": "SileroVADNode", "params": params}
    document = manifest("a", "b", vad)
    found_path, found_message = only_problem(document, registry, strict_params=strict_params)
    assert found_path == path
    assert found_message.startswith(message)


def test_validate_unknown_param_is_an_error_with_strict_params(registry: NodeRegistry) -> None:
    vad = {"id": "vad", "node_type": "SileroVADNode", "params": {"treshold": 0.5}}
    path, message = only_problem(manifest("a", "b", vad), registry, strict_params=True)
    assert path == "$.nodes[2].params.treshold"
    assert message.startswith("unknown parameter 'treshold'. Did you mean 'threshold'?")
    checked = check_manifest(manifest_from_dict(manifest(vad)), registry, strict_params=True)
    assert checked.warnings == []


def test_validate_unknown_param_is_ignored_with_a_warning(registry: NodeRegistry) -> None:
    # The original runtime ignored undeclared params, and its example manifests send them.
    vad = {"id": "vad", "node_type": "SileroVADNode", "params": {"treshold": 0.5, "speechPadMs": 7}}
    calc = {"id": "calc", "node_type": "CalculatorNode", "params": {"value": 5.0}}
    loaded = manifest_from_dict(manifest("a", vad, calc), catalog=registry)  # no ManifestError
    checked = check_manifest(loaded, registry)
    assert checked.problems == []
    assert checked.params["vad"] == VADParams(speech_pad_ms=7)
    assert [(w.node_id, w.path, w.param, w.closest) for w in checked.warnings] == [
        ("vad", "$.nodes[1].params.treshold", "treshold", "threshold"),
        ("calc", "$.nodes[2].params.value", "value", None),
    ]
    assert str(checked.warnings[1]) == (
        "$.nodes[2].params.value: unknown parameter 'value'. Allowed parameters: operation. "
        "It is ignored; remove it or correct its name."
    )


def test_validate_unknown_param_warning_uses_the_document_position(
    registry: NodeRegistry,
) -> None:
    calc = {"id": "calc", "node_type": "CalculatorNode", "params": {"value": 5.0}}
    # As when the node before it in the document failed to structure.
    checked = check_manifest(manifest_from_dict(manifest(calc)), registry, node_positions=[1])
    assert [w.path for w in checked.warnings] == ["$.nodes[1].params.value"]


def test_validate_misspelled_node_field_is_still_an_error(registry: NodeRegistry) -> None:
    node = {"id": "a", "node_type": "PassThrough", "parms": {"x": 1}}
    path, message = only_problem(manifest(node), registry)
    assert path == "$.nodes[0].parms"
    assert message.startswith("unknown key 'parms'. Did you mean 'params'?")


def test_validate_params_of_duplicate_node_checked_but_not_kept(registry: NodeRegistry) -> None:
    first = {"id": "v", "node_type": "SileroVADNode", "params": {"threshold": 0.2}}
    second = {"id": "v", "node_type": "SileroVADNode", "params": {"threshold": 0.9}}
    checked = check_manifest(manifest_from_dict(manifest(first, second)), registry)
    assert [p.path for p in checked.problems] == ["$.nodes[1].id"]
    assert checked.params == {"v": VADParams(threshold=0.2)}


def test_validate_unknown_node_type_skips_its_params(registry: NodeRegistry) -> None:
    node = {"id": "a", "node_type": "Nope", "params": {"anything": 1}}
    path, _ = only_problem(manifest(node), registry)
    assert path == "$.nodes[0].node_type"


def test_validate_reports_all_four_problems_at_once(registry: NodeRegistry) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(FOUR_PROBLEMS, catalog=registry, source="four.yaml")
    error = info.value
    assert [(p.path, p.message) for p in error.problems] == [
        ("$.nodes[2].params.threshold", "must be at most 1 (and at least 0), got 1.5."),
        (
            "$.nodes[3].id",
            "duplicate node id 'chunker' (first used at $.nodes[1]); give every node a unique id.",
        ),
        (
            "$.connections[2]",
            "connections form a cycle: resample -> chunker -> vad -> resample; "
            "pipelines must be acyclic.",
        ),
        ("$.connections[3].to", "connection refers to unknown node 'output'."),
    ]
    lines = str(error).splitlines()
    assert lines[0] == "The pipeline manifest in four.yaml has 4 problems:"
    assert lines[1:] == [f"  {p.path}: {p.message}" for p in error.problems]


def test_load_manifest_with_catalog_reports_all_problems(
    registry: NodeRegistry, tmp_path: Path
) -> None:
    path = tmp_path / "four.yaml"
    path.write_text(FOUR_PROBLEMS, encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        load_manifest(path, catalog=registry)
    assert len(info.value.problems) == 4
    assert f"in {path} has 4 problems" in str(info.value)


def test_load_manifest_with_catalog_combines_structure_and_check_problems(
    registry: NodeRegistry,
) -> None:
    text = (
        "version: v1\n"
        "nodes: [{id: a, node_type: Nope}, {id: b, node_type: PassThrough, bogus: 1}]\n"
        "connections: [{from: b, to: c}]\n"
    )
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, catalog=registry)
    assert [p.path for p in info.value.problems] == [
        "$.nodes[0].node_type",
        "$.nodes[1].bogus",
        "$.connections[0].to",
    ]


def test_validate_paths_after_unstructurable_node_point_at_document_index(
    registry: NodeRegistry,
) -> None:
    text = (
        "version: v1\n"
        "nodes:\n"
        "  - {id: a, node_type: PassThrough, bogus: 1}\n"
        "  - {id: b, node_type: Nope}\n"
        "  - {id: c, node_type: SileroVADNode, params: {threshold: 2.5}}\n"
        "  - {id: c, node_type: PassThrough}\n"
    )
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, catalog=registry)
    assert [p.path for p in info.value.problems] == [
        "$.nodes[0].bogus",
        "$.nodes[1].node_type",
        "$.nodes[2].params.threshold",
        "$.nodes[3].id",
    ]
    assert "(first used at $.nodes[2])" in info.value.problems[3].message


def test_validate_paths_after_unstructurable_connection_point_at_document_index(
    registry: NodeRegistry,
) -> None:
    text = "version: v1\nnodes: [{id: a, node_type: PassThrough}]\n"
    text += "connections: [{from: a}, {from: a, to: zz}]\n"
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, catalog=registry)
    assert [p.path for p in info.value.problems] == ["$.connections[0].to", "$.connections[1].to"]


def test_load_manifest_without_catalog_skips_checks() -> None:
    loaded = parse_manifest("version: v2\nnodes: [{id: a, node_type: Nope}]\n")
    assert loaded.version == "v2"
    assert loaded.nodes[0].node_type == "Nope"


def test_load_manifest_with_catalog_accepts_bundled_example(registry: NodeRegistry) -> None:
    path = Path(__file__).parents[2] / "src" / "remotemedia" / "examples" / "utterances.yaml"
    loaded = load_manifest(path, catalog=registry)
    assert [n.id for n in loaded.nodes] == ["resample", "chunker", "vad", "utterances"]


@pytest.mark.parametrize(
    ("nodes", "edges", "expected"),
    [
        (["a", "b", "c"], [("a", "b"), ("b", "c"), ("a", "c")], []),
        (["a"], [("a", "a")], [["a"]]),
        (["b", "a"], [("a", "b"), ("b", "a")], [["b", "a"]]),
        (
            ["a", "b", "c", "d", "e"],
            [("c", "d"), ("d", "e"), ("e", "c"), ("a", "b"), ("b", "a")],
            [["a", "b"], ["c", "d", "e"]],
        ),
        (["a", "b"], [("a", "zz"), ("zz", "a"), ("a", "b"), ("b", "ghost"), ("ghost", "b")], []),
        (["a", "b", "c"], [("a", "b"), ("b", "c"), ("c", "a"), ("b", "a")], [["a", "b"]]),
    ],
)
def test_find_cycles(
    nodes: list[str], edges: list[tuple[str, str]], expected: list[list[str]]
) -> None:
    assert find_cycles(nodes, edges) == expected


def test_find_cycles_handles_deep_chain_without_recursion_error() -> None:
    ids = [f"n{i}" for i in range(5000)]
    edges = [*itertools.pairwise(ids), (ids[-1], ids[0])]
    [cycle] = find_cycles(ids, edges)
    assert cycle == ids
