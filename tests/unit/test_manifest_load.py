"""Tests of loading manifests: text parsing, structuring and the load_* entry points."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remotemedia.errors import ManifestError
from remotemedia.manifest import (
    Connection,
    load_manifest,
    manifest_from_dict,
    parse_manifest,
)
from remotemedia.manifest.load import parse_text, structure_manifest

MINIMAL = "version: v1\nnodes: [{id: a, node_type: PassThrough}]\n"

# The original runtime's examples, as given in the wire-protocol reference (section 2).
TEST_PASSTHROUGH = """\
version: v1
metadata:
  name: test-passthrough
  description: Simple passthrough pipeline for testing CLI execution
nodes:
  - id: pass
    node_type: PassThrough
    params: {}
connections: []
"""

VOICE_ASSISTANT = """\
version: "v1"
metadata: { name: "voice-assistant", description: "...", category: "assistant" }
nodes:
  - id: vad
    node_type: SileroVADNode
    params: { threshold: 0.5, min_speech_duration_ms: 250, min_silence_duration_ms: 100, speech_pad_ms: 30 }
  - id: stt
    node_type: WhisperNode
    params: { model: "base", language: "en", task: "transcribe" }
  - { id: llm, node_type: LLMNode, params: { model: "phi-3-mini", max_tokens: 150 } }
  - { id: tts, node_type: KokoroTTSNode, params: { voice: "af_bella", speed: 1.0 } }
connections:
  - { from: vad, to: stt }
  - { from: stt, to: llm }
  - { from: llm, to: tts }
"""  # noqa: E501

RUST_WHISPER_JSON = """\
{ "version": "v1",
  "metadata": {"name": "Whisper_Rust", "created_at": "2025-10-25T20:29:50.657235Z",
               "description": "Rust Whisper Pipeline"},
  "nodes": [
    {"id": "MediaReader_0", "node_type": "MediaReaderNode",
     "params": {"path": "test.wav", "chunk_size": 4096}},
    {"id": "AudioBuffer_3", "node_type": "AudioBuffer",
     "params": {"buffer_size_samples": 32000}, "is_streaming": true} ],
  "connections": [ {"from": "MediaReader_0", "to": "AudioBuffer_3"} ] }
"""


def problems_of(text: str) -> list[tuple[str, str]]:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text)
    return [(p.path, p.message) for p in info.value.problems]


def only_problem(text: str) -> tuple[str, str]:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


def test_load_manifest_original_test_passthrough(tmp_path: Path) -> None:
    path = tmp_path / "test-passthrough.yaml"
    path.write_text(TEST_PASSTHROUGH, encoding="utf-8")
    manifest = load_manifest(path)
    assert manifest.version == "v1"
    assert manifest.metadata.name == "test-passthrough"
    assert manifest.metadata.description == "Simple passthrough pipeline for testing CLI execution"
    assert manifest.metadata.extra == {}
    assert [(n.id, n.node_type, n.params) for n in manifest.nodes] == [("pass", "PassThrough", {})]
    assert manifest.connections == []


def test_parse_manifest_original_voice_assistant_without_catalog() -> None:
    manifest = parse_manifest(VOICE_ASSISTANT)
    assert manifest.metadata.name == "voice-assistant"
    assert manifest.metadata.description == "..."
    assert manifest.metadata.extra == {"category": "assistant"}
    node_types = ["SileroVADNode", "WhisperNode", "LLMNode", "KokoroTTSNode"]
    assert [n.node_type for n in manifest.nodes] == node_types
    assert manifest.node("vad").params == {
        "threshold": 0.5,
        "min_speech_duration_ms": 250,
        "min_silence_duration_ms": 100,
        "speech_pad_ms": 30,
    }
    assert manifest.node("tts").params == {"voice": "af_bella", "speed": 1.0}
    edges = [("vad", "stt"), ("stt", "llm"), ("llm", "tts")]
    assert manifest.connections == [Connection(a, b) for a, b in edges]


def test_load_manifest_original_json_with_created_at_and_is_streaming(tmp_path: Path) -> None:
    path = tmp_path / "rust_whisper_pipeline.json"
    path.write_text(RUST_WHISPER_JSON, encoding="utf-8")
    manifest = load_manifest(path)
    assert manifest.metadata.name == "Whisper_Rust"
    assert manifest.metadata.created_at == "2025-10-25T20:29:50.657235Z"
    assert manifest.metadata.description == "Rust Whisper Pipeline"
    assert [n.is_streaming for n in manifest.nodes] == [False, True]
    assert manifest.node("MediaReader_0").params == {"path": "test.wav", "chunk_size": 4096}
    assert manifest.connections == [Connection("MediaReader_0", "AudioBuffer_3")]


def test_parse_manifest_json_and_yaml_give_equal_manifests() -> None:
    assert parse_manifest(RUST_WHISPER_JSON) == manifest_from_dict(json.loads(RUST_WHISPER_JSON))
    as_yaml = "version: v1\nnodes:\n  - id: a\n    node_type: PassThrough\n"
    as_json = '{"version": "v1", "nodes": [{"id": "a", "node_type": "PassThrough"}]}'
    assert parse_manifest(as_yaml) == parse_manifest(as_json)


def test_parse_text_yaml_syntax_error_names_line_and_column() -> None:
    document, problems = parse_text("version: v1\nnodes: [\n")
    assert document is None
    assert [p.path for p in problems] == ["$"]
    assert problems[0].message.startswith("invalid YAML at line 3, column 1: expected the node")


def test_parse_text_json_syntax_error_names_line_and_column() -> None:
    document, problems = parse_text('{"version": "v1",\n "nodes": [}\n')
    assert document is None
    assert [str(p) for p in problems] == ["$: invalid JSON at line 2, column 12: Expecting value."]


def test_parse_manifest_syntax_error_names_source() -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest("nodes: [\n", source="pipe.yaml")
    assert info.value.source == "pipe.yaml"
    assert str(info.value).startswith("The pipeline manifest in pipe.yaml has 1 problem:\n  $: ")
    assert "invalid YAML at line 2, column 1" in str(info.value)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("- a\n- b\n", "an array"),
        ("", "null"),
        ("42\n", "an integer 42"),
        ("hi\n", "a string 'hi'"),
    ],
)
def test_parse_manifest_rejects_top_level_that_is_not_a_mapping(text: str, kind: str) -> None:
    assert only_problem(text) == ("$", f"a manifest must be an object, got {kind}.")


def test_structure_manifest_of_non_mapping_has_no_manifest() -> None:
    structured = structure_manifest([1, 2])
    assert structured.manifest is None
    assert [str(p) for p in structured.problems] == [
        "$: a manifest must be an object, got an array."
    ]


@pytest.mark.parametrize(
    ("text", "path", "hint", "allowed"),
    [
        (
            "version: v1\nnode: []\nnodes: [{id: a, node_type: PassThrough}]\n",
            "$.node",
            "unknown key 'node'. Did you mean 'nodes'?",
            "version, metadata, nodes, connections, python_env",
        ),
        (
            "version: v1\nnodes: [{id: a, node_type: PassThrough, param: {}}]\n",
            "$.nodes[0].param",
            "unknown key 'param'. Did you mean 'params'?",
            "id, node_type, params, is_streaming, is_output_node, capabilities, host",
        ),
        (
            "version: v1\nnodes: [{id: a, nodeType: PassThrough, node_type: PassThrough}]\n",
            "$.nodes[0].nodeType",
            "unknown key 'nodeType'. Did you mean 'node_type'?",
            "id, node_type, params,",
        ),
        (
            MINIMAL + "connections: [{from: a, to: a, type: audio}]\n",
            "$.connections[0].type",
            "unknown key 'type'.",
            "from, to",
        ),
        (
            "version: v1\nnodes: [{id: a, node_type: X, capabilities: {gpus: {}}}]\n",
            "$.nodes[0].capabilities.gpus",
            "unknown key 'gpus'. Did you mean 'gpu'?",
            "gpu, cpu, memory_gb",
        ),
        (
            "version: v1\nnodes: [{id: a, node_type: X, capabilities: {gpu: {typ: cuda}}}]\n",
            "$.nodes[0].capabilities.gpu.typ",
            "unknown key 'typ'. Did you mean 'type'?",
            "type, min_memory_gb, required",
        ),
        (
            MINIMAL + "python_env: {pythn_version: '3.11'}\n",
            "$.python_env.pythn_version",
            "unknown key 'pythn_version'. Did you mean 'python_version'?",
            "python_version, scope, extra_deps",
        ),
    ],
)
def test_parse_manifest_unknown_key_suggests_and_lists_allowed(
    text: str, path: str, hint: str, allowed: str
) -> None:
    found_path, message = only_problem(text)
    assert found_path == path
    assert message.startswith(hint)
    assert f"Allowed keys: {allowed}" in message


def test_parse_manifest_unknown_key_without_close_match_has_no_hint() -> None:
    _, message = only_problem(MINIMAL + "zzzzzz: 1\n")
    assert message == (
        "unknown key 'zzzzzz'. Allowed keys: version, metadata, nodes, connections, python_env."
    )


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        (
            "nodes: [{id: a, node_type: T}]\n",
            "$.version",
            'this required key is missing; use version: "v1".',
        ),
        (
            "version: 1\nnodes: [{id: a, node_type: T}]\n",
            "$.version",
            'expected a string such as "v1", got an integer 1.',
        ),
        ("version: v1\n", "$.nodes", "this required key is missing; list the nodes here."),
    ],
)
def test_parse_manifest_reports_missing_or_bad_top_level_key(
    text: str, path: str, message: str
) -> None:
    found_path, found_message = only_problem(text)
    assert found_path == path
    assert found_message.startswith(message)


def test_parse_manifest_reports_missing_node_and_connection_keys() -> None:
    text = (
        "version: v1\n"
        "nodes: [{node_type: PassThrough}, {id: b}]\n"
        "connections: [{from: a}, {to: b}]\n"
    )
    assert problems_of(text) == [
        ("$.nodes[0].id", "this required key is missing."),
        ("$.nodes[1].node_type", "this required key is missing."),
        ("$.connections[0].to", "this required key is missing."),
        ("$.connections[1].from", "this required key is missing."),
    ]


NODE = {"id": "a", "node_type": "T"}


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"nodes": {}}, "$.nodes", "expected an array, got an object."),
        ({"nodes": [1]}, "$.nodes[0]", "expected an object, got an integer 1."),
        ({"nodes": [{**NODE, "id": 3}]}, "$.nodes[0].id", "expected a string, got an integer 3."),
        ({"nodes": [{**NODE, "is_streaming": 1}]}, "$.nodes[0].is_streaming", "expected a boolean"),
        ({"nodes": [{**NODE, "params": [1]}]}, "$.nodes[0].params", "expected an object, got an"),
        ({"metadata": 5}, "$.metadata", "expected an object, got an integer 5."),
        ({"metadata": {"name": 5}}, "$.metadata.name", "expected a string, got an integer 5."),
        ({"connections": {}}, "$.connections", "expected an array, got an object."),
        ({"connections": [{"from": "a", "to": 7}]}, "$.connections[0].to", "expected a string"),
    ],
)
def test_manifest_from_dict_reports_wrong_types_with_path(
    change: dict, path: str, message: str
) -> None:
    with pytest.raises(ManifestError) as info:
        manifest_from_dict({"version": "v1", "nodes": [NODE], **change})
    [problem] = info.value.problems
    assert problem.path == path
    assert problem.message.startswith(message)


def test_parse_manifest_reports_invalid_runtime_hint_at_its_path() -> None:
    path, message = only_problem("version: v1\nnodes: [{id: a, node_type: T, runtime_hint: foo}]\n")
    assert path == "$.nodes[0].runtime_hint"
    assert "foo" in message


def test_parse_manifest_invalid_runtime_hint_message_lists_choices_plainly() -> None:
    _, message = only_problem("version: v1\nnodes: [{id: a, node_type: T, runtime_hint: foo}]\n")
    assert "typing" not in message
    assert "'rust_python', 'cpython', 'cpython_wasm', 'auto'" in message


def test_parse_manifest_reports_every_problem_in_section_order() -> None:
    text = (
        "verison: v1\nnodes: [{id: a, node_type: T, bogus: 1}, {id: b}]\nconnections: [{from: a}]\n"
    )
    assert [path for path, _ in problems_of(text)] == [
        "$.version",
        "$.nodes[0].bogus",
        "$.nodes[1].node_type",
        "$.connections[0].to",
        "$.verison",
    ]


def test_parse_manifest_error_message_counts_and_lists_problems() -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest("version: 1\n")
    assert str(info.value) == (
        "The pipeline manifest in <string> has 2 problems:\n"
        '  $.version: expected a string such as "v1", got an integer 1.\n'
        "  $.nodes: this required key is missing; list the nodes here."
    )


def test_parse_manifest_keeps_metadata_extra_keys() -> None:
    text = "metadata: {name: x, category: demo, tags: [1, 2]}\n" + MINIMAL
    manifest = parse_manifest(text)
    assert manifest.metadata.name == "x"
    assert manifest.metadata.extra == {"category": "demo", "tags": [1, 2]}


def test_parse_manifest_null_params_become_empty_mapping() -> None:
    manifest = parse_manifest("version: v1\nnodes: [{id: a, node_type: T, params: null}]\n")
    assert manifest.nodes[0].params == {}


def test_parse_manifest_defaults_for_omitted_optional_keys() -> None:
    manifest = parse_manifest(MINIMAL)
    assert manifest.connections == []
    assert manifest.python_env is None
    assert manifest.metadata.name == ""
    node = manifest.nodes[0]
    assert (node.params, node.is_streaming, node.capabilities) == ({}, False, None)


def test_parse_manifest_maps_from_and_to_onto_connection_fields() -> None:
    text = MINIMAL + "connections: [{from: a, to: b}]\n"
    connection = parse_manifest(text).connections[0]
    assert (connection.source, connection.target) == ("a", "b")


def test_parse_manifest_carries_capabilities_and_execution() -> None:
    text = (
        "version: v1\n"
        "nodes:\n"
        "  - id: a\n"
        "    node_type: T\n"
        "    capabilities: {gpu: {type: cuda, min_memory_gb: 4}, cpu: {cores: 2}}\n"
        "    execution: {placement: prefer_local}\n"
        "    runtime_hint: cpython\n"
    )
    node = parse_manifest(text).nodes[0]
    assert node.capabilities.gpu.type == "cuda"
    assert node.capabilities.gpu.min_memory_gb == 4.0
    assert node.capabilities.gpu.required is True
    assert node.capabilities.cpu.cores == 2
    assert node.execution.placement == "prefer_local"
    assert node.runtime_hint == "cpython"


def test_manifest_from_dict_rejects_non_mapping_with_source() -> None:
    with pytest.raises(ManifestError) as info:
        manifest_from_dict(["version"], source="api")
    assert info.value.source == "api"
    assert [str(p) for p in info.value.problems] == [
        "$: a manifest must be an object, got an array."
    ]


def test_load_manifest_missing_file_is_manifest_error(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert info.value.source == str(path)
    assert [str(p) for p in info.value.problems] == [
        "$: cannot read the file: No such file or directory."
    ]
    assert str(info.value).startswith(f"The pipeline manifest in {path} has 1 problem:")


def test_load_manifest_directory_is_manifest_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"\$: cannot read the file: Is a directory\."):
        load_manifest(tmp_path)


def test_load_manifest_non_utf8_file_is_manifest_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"version: v1\nmetadata: {name: caf\xe9}\n")
    with pytest.raises(ManifestError, match=r"cannot read the file: 'utf-8' codec can't decode"):
        load_manifest(path)
