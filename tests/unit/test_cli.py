"""Tests of the ``remotemedia`` command line: ``validate`` and ``nodes``, run in-process."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from remotemedia.cli.main import main
from remotemedia.cli.processes import child_arguments
from remotemedia.cli.serve import (
    add_serve_arguments,
    config_from_args,
    process_count,
    serve_flags,
)
from remotemedia.config import ConfigError, Limits, WorkerConfig
from remotemedia.examples import example_names
from remotemedia.nodes import BUILTIN_NODE_TYPES
from tests.manifests import FOUR_PROBLEMS

BUILTIN_NAMES = sorted(cls.node_type for cls in BUILTIN_NODE_TYPES)

VALID = """\
version: v1
metadata: {name: cli-test}
nodes:
  - {id: resample, node_type: FastResampleNode, params: {target_rate: 16000}}
  - {id: chunker, node_type: AudioChunkerNode, params: {chunkSize: 512}}
  - {id: sink, node_type: PassThrough}
connections:
  - {from: resample, to: chunker}
  - {from: chunker, to: sink}
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_cli_validate_valid_file_exits_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "ok.yaml", VALID)
    assert main(["validate", path]) == 0
    out, err = capsys.readouterr()
    assert out == (f"{path}: valid (3 nodes, 2 connections; sources: resample; sinks: sink).\n")
    assert err == ""


def test_cli_validate_valid_json_file_exits_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = {
        "version": "v1",
        "nodes": [{"id": "a", "node_type": "Echo"}, {"id": "b", "node_type": "PassThrough"}],
        "connections": [],
    }
    path = write(tmp_path, "ok.json", json.dumps(document))
    assert main(["validate", path]) == 0
    out = capsys.readouterr().out
    assert "valid (2 nodes, 0 connections; sources: a, b; sinks: a, b)." in out


def test_cli_validate_reports_all_four_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "bad.yaml", FOUR_PROBLEMS)
    assert main(["validate", path]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"error: The pipeline manifest in {path} has 4 problems:",
        "  $.nodes[2].params.threshold: must be at most 1 (and at least 0), got 1.5.",
        "  $.nodes[3].id: duplicate node id 'chunker' (first used at $.nodes[1]); "
        "give every node a unique id.",
        "  $.connections[2]: connections form a cycle: resample -> chunker -> vad -> resample; "
        "pipelines must be acyclic.",
        "  $.connections[3].to: connection refers to unknown node 'output'.",
    ]


def test_cli_validate_warns_about_unknown_params_and_exits_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The original's CalculatorNode examples pass `value`, which it ignored.
    text = """\
version: v1
nodes:
  - {id: calc, node_type: CalculatorNode, params: {operation: add, value: 5.0}}
  - {id: chunker, node_type: AudioChunkerNode, params: {chunk_sise: 512}}
"""
    path = write(tmp_path, "original.yaml", text)
    assert main(["validate", path]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"{path}: valid (2 nodes, 0 connections;")
    assert err.splitlines() == [
        "warning: $.nodes[0].params.value: unknown parameter 'value'. Allowed parameters: "
        "operation. It is ignored; remove it or correct its name.",
        "warning: $.nodes[1].params.chunk_sise: unknown parameter 'chunk_sise'. Did you mean "
        "'chunk_size'? Allowed parameters: chunk_size. It is ignored; remove it or correct "
        "its name.",
    ]


def test_cli_validate_reports_syntax_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "broken.yaml", "version: v1\nnodes: [\n")
    assert main(["validate", path]) == 1
    err = capsys.readouterr().err
    assert f"error: The pipeline manifest in {path} has 1 problem:" in err
    assert "$: invalid YAML at line 3, column 1" in err


def test_cli_validate_missing_file_exits_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = str(tmp_path / "missing.yaml")
    assert main(["validate", path]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"error: The pipeline manifest in {path} has 1 problem:\n"
        "  $: cannot read the file: No such file or directory.\n"
    )


def test_cli_bundled_examples_include_the_documented_ones() -> None:
    assert {"passthrough", "utterances", "vad"} <= set(example_names())


def test_cli_validate_unknown_bundled_name_exits_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "no-such-example"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "error: The pipeline manifest in no-such-example has 1 problem:" in err
    assert (
        "$: no file 'no-such-example' and no bundled example of that name "
        f"(bundled examples: {', '.join(example_names())})."
    ) in err


@pytest.mark.parametrize(
    ("name", "summary"),
    [
        ("vad", "vad: valid (3 nodes, 2 connections; sources: resample; sinks: vad)."),
        (
            "utterances",
            "utterances: valid (4 nodes, 3 connections; sources: resample; sinks: utterances).",
        ),
    ],
)
def test_cli_validate_bundled_example_exits_zero(
    name: str,
    summary: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.chdir(tmp_path)  # no file of that name shadows the bundled example
    assert main(["validate", name]) == 0
    assert capsys.readouterr().out == summary + "\n"


def test_cli_validate_prefers_existing_file_over_bundled_name(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "vad", FOUR_PROBLEMS)
    assert main(["validate", "vad"]) == 1
    assert "error: The pipeline manifest in vad has 4 problems:" in capsys.readouterr().err


def test_cli_validate_bundled_passthrough_names_its_node(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "passthrough"]) == 0
    assert capsys.readouterr().out.endswith(" 0 connections; sources: pass; sinks: pass).\n")


def test_cli_validate_counts_one_node_in_singular(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "passthrough"]) == 0
    assert "passthrough: valid (1 node, 0 connections;" in capsys.readouterr().out


def test_cli_validate_requires_manifest_argument(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["validate"])
    assert info.value.code == 2
    assert "the following arguments are required: manifest" in capsys.readouterr().err


def test_cli_without_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert "the following arguments are required: COMMAND" in capsys.readouterr().err


def test_cli_nodes_text_lists_every_builtin_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nodes"]) == 0
    out = capsys.readouterr().out
    headers = [line.split(":")[0] for line in out.splitlines() if line and line[0] != " "]
    assert headers == BUILTIN_NAMES


def test_cli_nodes_text_shows_params_with_type_default_and_range(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["nodes"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "SileroVADNode: Detect speech; emit one JSON event per chunk" in "\n".join(lines)
    assert "  in: audio  ->  out: audio, json" in lines
    assert (
        "  - chunk_size (integer, default 512, >=1 and <=65536): "
        "Frames (samples per channel) per output chunk."
    ) in lines
    assert (
        "  - quality (string, default 'Medium', Low | Medium | High): "
        "soxr quality preset (any case)."
    ) in lines
    assert any(line.startswith("  - model_path (string or null, default None): ") for line in lines)


def test_cli_nodes_json_describes_every_builtin_type(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nodes", "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    environments = {e["node_type"]: e["environment"] for e in described}
    assert environments["PassThrough"] is None
    assert environments["LFM2TextNode"] == "the server's python, torch>=2.8, transformers>=5.18,<6"
    assert [entry["node_type"] for entry in described] == BUILTIN_NAMES
    for entry in described:
        assert set(entry) == {
            "node_type",
            "description",
            "accepts",
            "produces",
            "params",
            "unavailable",
            "environment",
        }
        assert entry["description"]
        assert entry["accepts"] == sorted(entry["accepts"])
        assert entry["produces"]
        for p in entry["params"]:
            assert set(p) == {"name", "type", "default", "range", "doc"}
            assert p["doc"]


def test_cli_nodes_json_params_entries(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["nodes", "--json"]) == 0
    by_type = {entry["node_type"]: entry for entry in json.loads(capsys.readouterr().out)}
    vad = by_type["SileroVADNode"]
    assert (vad["accepts"], vad["produces"]) == (["audio"], ["audio", "json"])
    params = {p["name"]: p for p in vad["params"]}
    assert params["threshold"] == {
        "name": "threshold",
        "type": "number",
        "default": 0.5,
        "range": ">=0 and <=1",
        "doc": "Speech probability that starts speech.",
    }
    assert params["neg_threshold"]["default"] is None
    assert params["sampling_rate"]["range"] == "8000 | 16000"
    resample = {p["name"]: p for p in by_type["FastResampleNode"]["params"]}
    assert resample["source_rate"]["type"] == "integer or null"
    assert resample["source_rate"]["range"] == ">0 and <=768000"
    assert by_type["PassThrough"]["params"] == []
    assert by_type["Echo"]["accepts"] == ["audio", "binary", "control", "image", "json", "text"]
    assert by_type["AudioBufferAccumulatorNode"]["accepts"] == ["audio", "json"]


def test_serve_strict_params_flag_reaches_the_limits() -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    assert config_from_args(parser.parse_args([]), {}).limits.strict_params is False
    strict = config_from_args(parser.parse_args(["--strict-params"]), {})
    assert strict.limits.strict_params is True


def test_serve_flags_reach_the_worker_config() -> None:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    args = parser.parse_args(
        [
            "--worker-call-timeout",
            "30",
            "--worker-start-timeout",
            "15",
            "--worker-max-rss-mb",
            "900",
        ]
    )
    workers = config_from_args(args, {}).workers
    assert (workers.call_timeout, workers.start_timeout, workers.max_rss_mb) == (30.0, 15.0, 900.0)
    assert workers.stop_grace == 2.0
    with pytest.raises(ConfigError, match="start_timeout must be positive"):
        WorkerConfig(start_timeout=0)
    with pytest.raises(ConfigError, match="max_rss_mb must be 0 or more"):
        WorkerConfig(max_rss_mb=-1)


def test_serve_processes_hands_its_other_flags_to_each_process() -> None:
    argv = ["--bind", "0.0.0.0:9", "--processes=2", "--max-sessions", "5", "--metrics-port", "7"]
    assert child_arguments(argv) == ["--max-sessions", "5"]
    assert process_count("3") == 3
    assert process_count("auto") >= 1
    with pytest.raises(ConfigError, match="--processes '0' must be a positive number"):
        process_count("0")


def _serve_config(argv: list[str], env: dict[str, str]) -> Any:
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    return config_from_args(parser.parse_args(argv), env)


def test_every_serve_flag_has_an_environment_variable_the_flag_overrides() -> None:
    env = {
        "REMOTEMEDIA_MAX_SESSIONS": "7",
        "REMOTEMEDIA_DRAIN_TIMEOUT": "25",
        "REMOTEMEDIA_STRICT_PARAMS": "true",
        "REMOTEMEDIA_EXECUTOR": "WhisperNode=inprocess, SileroVADNode=process",
        "REMOTEMEDIA_WORKER_START_TIMEOUT": "90",
        "REMOTEMEDIA_TRANSPORT": "grpclib",
        "GRPC_BIND_ADDRESS": "0.0.0.0:50051",
    }
    config = _serve_config([], env)
    assert config.limits.max_sessions == 7
    assert config.drain_timeout == 25.0
    assert config.limits.strict_params is True
    assert config.executors == {"WhisperNode": "inprocess", "SileroVADNode": "process"}
    assert config.workers.start_timeout == 90.0
    assert config.transport == "grpclib"
    assert config.bind == "0.0.0.0:50051"
    flagged = _serve_config(["--max-sessions", "3", "--transport", "native"], env)
    assert (flagged.limits.max_sessions, flagged.transport) == (3, "native")
    assert _serve_config([], {}).limits.max_sessions == Limits().max_sessions
    names = [flag.env for flag in serve_flags()]
    assert len(set(names)) == len(names) == len(serve_flags())
    assert all(name.startswith(("REMOTEMEDIA_", "GRPC_")) for name in names)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REMOTEMEDIA_MAX_SESSIONS": "many"}, "REMOTEMEDIA_MAX_SESSIONS='many' is not a valid"),
        ({"REMOTEMEDIA_STRICT_PARAMS": "maybe"}, "REMOTEMEDIA_STRICT_PARAMS must be true or false"),
        ({"REMOTEMEDIA_TRANSPORT": "h3"}, "REMOTEMEDIA_TRANSPORT must be one of native, grpclib"),
    ],
)
def test_serve_environment_variable_with_a_bad_value_is_named(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        _serve_config([], env)


def test_readme_documents_every_serve_environment_variable() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [flag.env for flag in serve_flags() if f"`{flag.env}`" not in readme]
    assert missing == []
