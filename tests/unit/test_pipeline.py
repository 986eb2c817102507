"""The in-process API (remotemedia.pipeline): how it treats params a node does not declare."""

from __future__ import annotations

import logging

import pytest

import remotemedia
from remotemedia import Json
from remotemedia.errors import ManifestError
from remotemedia.pipeline import check_pipeline

# The original's CalculatorNode example: `value` is a param the original ignored.
ORIGINAL_CALCULATOR = {
    "version": "v1",
    "nodes": [
        {"id": "calc", "node_type": "CalculatorNode", "params": {"operation": "add", "value": 5.0}}
    ],
}


def test_check_pipeline_returns_unknown_params_as_warnings() -> None:
    graph, warnings = check_pipeline(ORIGINAL_CALCULATOR)
    assert list(graph.nodes) == ["calc"]
    assert [(w.node_id, w.path, w.param) for w in warnings] == [
        ("calc", "$.nodes[0].params.value", "value")
    ]


def test_pipeline_runs_a_manifest_with_unknown_params_and_logs_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="remotemedia.pipeline"):
        results = remotemedia.run(ORIGINAL_CALCULATOR, [Json({"operands": [1, 2]})])
    assert [r.data.value["result"] for r in results if isinstance(r.data, Json)] == [3]
    assert [r.getMessage() for r in caplog.records] == [
        "Node 'calc': $.nodes[0].params.value: unknown parameter 'value'. Allowed parameters: "
        "operation. It is ignored; remove it or correct its name."
    ]


def test_pipeline_still_refuses_a_misspelled_node_field() -> None:
    document = {"version": "v1", "nodes": [{"id": "a", "node_type": "PassThrough", "parms": {}}]}
    with pytest.raises(ManifestError, match=r"\$\.nodes\[0\]\.parms: unknown key 'parms'"):
        check_pipeline(document)
