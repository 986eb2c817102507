"""Tests of remotemedia.params: declaring params and checking raw manifest params."""

from __future__ import annotations

import math

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from remotemedia.nodes.audio.accumulator import AccumulatorParams
from remotemedia.nodes.audio.chunker import ChunkerParams
from remotemedia.nodes.audio.resample import ResampleParams
from remotemedia.nodes.audio.vad import VADParams
from remotemedia.nodes.base import NoParams
from remotemedia.nodes.calculator import CalculatorParams
from remotemedia.nodes.text.collector import TextCollectorParams
from remotemedia.params import (
    UnknownParam,
    camel_case,
    closest,
    describe_params,
    param,
    structure_params,
    unknown_params,
)

PATH = "$.nodes[0].params"


@attrs.frozen
class Tiny:
    count: int = param(3, doc="How many.", ge=1, le=10)
    ratio: float = param(0.5, doc="A ratio.", gt=0.0)
    mode: str = param("Fast", doc="The mode.", choices=("Fast", "Slow"))
    rate: int | None = param(None, doc="A rate.", gt=0, auto="auto")
    label: str | None = param(None, doc="A label.")
    tags: list[str] = param(attrs.Factory(list), doc="Some tags.")  # noqa: RUF009


@attrs.frozen
class Window:
    low: int = param(0, doc="Lower edge.", ge=0)
    high: int = param(10, doc="Upper edge.", le=100)

    def __attrs_post_init__(self) -> None:
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")


def only_problem(cls: type, raw: object) -> tuple[str, str]:
    instance, problems = structure_params(cls, raw, PATH)
    assert instance is None
    assert len(problems) == 1, problems
    return problems[0].path, problems[0].message


def test_structure_params_defaults_when_empty_or_null() -> None:
    for raw in ({}, None):
        instance, problems = structure_params(Tiny, raw, PATH)
        assert problems == []
        assert instance == Tiny(count=3, ratio=0.5, mode="Fast", rate=None, label=None, tags=[])


def test_structure_params_builds_instance_from_valid_values() -> None:
    raw = {"count": 7, "ratio": 2, "mode": "Slow", "rate": 8000, "label": "x", "tags": ["a"]}
    instance, problems = structure_params(Tiny, raw, PATH)
    assert problems == []
    assert instance == Tiny(count=7, ratio=2.0, mode="Slow", rate=8000, label="x", tags=["a"])
    assert isinstance(instance.ratio, float)


def test_structure_params_unknown_param_suggests_closest_and_lists_allowed() -> None:
    path, message = only_problem(VADParams, {"treshold": 0.5})
    assert path == f"{PATH}.treshold"
    assert message.startswith("unknown parameter 'treshold'. Did you mean 'threshold'?")
    assert message.endswith(
        "Allowed parameters: threshold, neg_threshold, sampling_rate, min_speech_duration_ms, "
        "min_silence_duration_ms, speech_pad_ms, model_path, emit_audio, speculative_silence_ms."
    )


def test_structure_params_unknown_param_suggests_camel_case_form() -> None:
    _, message = only_problem(VADParams, {"minSilenceDuration": 100})
    assert "Did you mean 'minSilenceDurationMs'?" in message


def test_structure_params_unknown_param_without_close_match_has_no_hint() -> None:
    _, message = only_problem(ChunkerParams, {"zzzz": 1})
    assert message == "unknown parameter 'zzzz'. Allowed parameters: chunk_size."


def test_structure_params_unknown_param_of_paramless_node_allows_none() -> None:
    path, message = only_problem(NoParams, {"x": 1})
    assert path == f"{PATH}.x"
    assert message == "unknown parameter 'x'. Allowed parameters: none."


def test_structure_params_ignore_unknown_skips_them_but_checks_the_rest() -> None:
    raw = {"value": 5.0, "operation": "ADD"}
    instance, problems = structure_params(CalculatorParams, raw, PATH, ignore_unknown=True)
    assert (instance, problems) == (CalculatorParams(operation="add"), [])
    _, problems = structure_params(
        CalculatorParams, {"value": 5.0, "operation": "pow"}, PATH, ignore_unknown=True
    )
    assert [p.path for p in problems] == [f"{PATH}.operation"]


def test_unknown_params_lists_each_with_the_closest_known_name() -> None:
    raw = {"treshold": 0.5, "minSilenceDurationMs": 1, "speech_pad_ms": 2, 7: "x"}
    assert unknown_params(VADParams, raw) == [
        UnknownParam("treshold", "threshold", tuple(attrs.fields_dict(VADParams))),
        UnknownParam("7", None, tuple(attrs.fields_dict(VADParams))),
    ]
    assert unknown_params(VADParams, None) == []
    assert unknown_params(VADParams, [1]) == []
    (value,) = unknown_params(CalculatorParams, {"value": 5.0})
    assert value.describe() == "unknown parameter 'value'. Allowed parameters: operation."


@pytest.mark.parametrize(
    ("raw", "field", "expected"),
    [
        ({"minSilenceDurationMs": 200}, "min_silence_duration_ms", 200),
        ({"speechPadMs": 0}, "speech_pad_ms", 0),
        ({"negThreshold": 0.2}, "neg_threshold", 0.2),
        ({"samplingRate": 8000}, "sampling_rate", 8000),
    ],
)
def test_structure_params_accepts_camel_case_alias(raw: dict, field: str, expected: object) -> None:
    instance, problems = structure_params(VADParams, raw, PATH)
    assert problems == []
    assert getattr(instance, field) == expected


def test_structure_params_rejects_key_given_as_snake_and_camel() -> None:
    raw = {"min_silence_duration_ms": 200, "minSilenceDurationMs": 100}
    path, message = only_problem(VADParams, raw)
    assert path == f"{PATH}.minSilenceDurationMs"
    assert message == (
        "'minSilenceDurationMs' repeats 'min_silence_duration_ms'; give each parameter once."
    )


def test_structure_params_rejects_key_given_as_camel_then_snake() -> None:
    path, message = only_problem(ChunkerParams, {"chunkSize": 256, "chunk_size": 512})
    assert path == f"{PATH}.chunk_size"
    assert message.endswith("give each parameter once.")


def test_structure_params_repeat_message_names_the_earlier_camel_key() -> None:
    _, message = only_problem(ChunkerParams, {"chunkSize": 256, "chunk_size": 512})
    assert message == "'chunk_size' repeats 'chunkSize'; give each parameter once."


@pytest.mark.parametrize(
    ("cls", "raw", "expected"),
    [
        (VADParams, {"threshold": "0.5"}, "expected number, got a string '0.5'."),
        (VADParams, {"threshold": True}, "expected number, got a boolean True."),
        (VADParams, {"min_speech_duration_ms": True}, "expected integer, got a boolean True."),
        (VADParams, {"min_speech_duration_ms": 1.5}, "expected integer, got a number 1.5."),
        (VADParams, {"min_speech_duration_ms": 250.0}, "expected integer, got a number 250.0."),
        (VADParams, {"model_path": 3}, "expected string or null, got an integer 3."),
        (ResampleParams, {"quality": 3}, "expected string, got an integer 3."),
        (ChunkerParams, {"chunk_size": [512]}, "expected integer, got an array."),
        (TextCollectorParams, {"yield_partial_on_end": 1}, "expected boolean, got an integer 1."),
        (TextCollectorParams, {"min_sentence_length": {}}, "expected integer, got an object."),
        (ChunkerParams, {"chunk_size": None}, "expected integer, got null"),
    ],
)
def test_structure_params_rejects_wrong_json_type(cls: type, raw: dict, expected: str) -> None:
    path, message = only_problem(cls, raw)
    assert path == f"{PATH}.{next(iter(raw))}"
    assert message.startswith(expected)


def test_structure_params_null_message_names_null_once() -> None:
    _, message = only_problem(ChunkerParams, {"chunk_size": None})
    assert message == "expected integer, got null."


def test_structure_params_accepts_integer_for_number() -> None:
    instance, problems = structure_params(VADParams, {"threshold": 1}, PATH)
    assert problems == []
    assert instance.threshold == 1.0
    assert isinstance(instance.threshold, float)


@pytest.mark.parametrize(
    ("cls", "raw", "expected"),
    [
        (VADParams, {"threshold": 1.5}, "must be at most 1 (and at least 0), got 1.5."),
        (VADParams, {"threshold": -0.1}, "must be at least 0 (and at most 1), got -0.1."),
        (AccumulatorParams, {"max_utterance_duration_ms": 50}, "must be at least 100 (and"),
        (ResampleParams, {"target_rate": 1_000_000}, "must be at most 768000, got 1000000."),
        (ResampleParams, {"target_rate": 0}, "must be greater than 0, got 0."),
        (ResampleParams, {"sourceRate": -8000}, "must be greater than 0, got -8000."),
        (Tiny, {"ratio": 0.0}, "must be greater than 0, got 0.0."),
        (Window, {"low": -1}, "must be at least 0, got -1."),
        (Window, {"high": 101}, "must be at most 100, got 101."),
    ],
)
def test_structure_params_rejects_out_of_range(cls: type, raw: dict, expected: str) -> None:
    path, message = only_problem(cls, raw)
    assert path == f"{PATH}.{next(iter(raw))}"
    assert message.startswith(expected)


@pytest.mark.parametrize("value", [0.0, 1.0, 0.25])
def test_structure_params_accepts_inclusive_bounds(value: float) -> None:
    instance, problems = structure_params(VADParams, {"threshold": value}, PATH)
    assert problems == []
    assert instance.threshold == value


@given(st.integers(min_value=-100, max_value=200))
def test_structure_params_range_matches_bounds(count: int) -> None:
    instance, problems = structure_params(Tiny, {"count": count}, PATH)
    if 1 <= count <= 10:
        assert problems == []
        assert instance.count == count
    else:
        assert instance is None
        assert [p.path for p in problems] == [f"{PATH}.count"]


def test_structure_params_rejects_nan_for_bounded_number() -> None:
    instance, problems = structure_params(VADParams, {"threshold": math.nan}, PATH)
    assert instance is None
    assert [p.path for p in problems] == [f"{PATH}.threshold"]


@pytest.mark.parametrize(
    ("cls", "key", "given", "canonical"),
    [
        (ResampleParams, "quality", "high", "High"),
        (ResampleParams, "quality", "LOW", "Low"),
        (ResampleParams, "quality", "mEdIuM", "Medium"),
        (CalculatorParams, "operation", "ADD", "add"),
        (Tiny, "mode", "slow", "Slow"),
    ],
)
def test_structure_params_normalises_choice_case(
    cls: type, key: str, given: str, canonical: str
) -> None:
    instance, problems = structure_params(cls, {key: given}, PATH)
    assert problems == []
    assert getattr(instance, key) == canonical


@pytest.mark.parametrize(
    ("cls", "raw", "expected"),
    [
        (
            ResampleParams,
            {"quality": "ultra"},
            "must be one of 'Low', 'Medium', 'High', got 'ultra'.",
        ),
        (CalculatorParams, {"operation": "pow"}, "must be one of 'add', 'subtract', 'multiply',"),
        (VADParams, {"sampling_rate": 44100}, "must be one of 8000, 16000, got 44100."),
    ],
)
def test_structure_params_rejects_value_not_among_choices(
    cls: type, raw: dict, expected: str
) -> None:
    path, message = only_problem(cls, raw)
    assert path == f"{PATH}.{next(iter(raw))}"
    assert message.startswith(expected)


def test_structure_params_choice_param_may_be_null_when_optional() -> None:
    instance, problems = structure_params(CalculatorParams, {"operation": None}, PATH)
    assert problems == []
    assert instance.operation is None


@pytest.mark.parametrize("token", ["auto", "AUTO", "Auto"])
def test_structure_params_auto_token_means_none(token: str) -> None:
    instance, problems = structure_params(ResampleParams, {"source_rate": token}, PATH)
    assert problems == []
    assert instance.source_rate is None


def test_structure_params_other_string_for_auto_param_names_the_token() -> None:
    path, message = only_problem(ResampleParams, {"source_rate": "fast"})
    assert path == f"{PATH}.source_rate"
    assert message == "expected integer or null or 'auto', got a string 'fast'."


def test_structure_params_auto_token_declared_with_capitals_is_accepted() -> None:
    @attrs.frozen
    class Capital:
        rate: int | None = param(None, doc="A rate.", gt=0, auto="Auto")

    instance, problems = structure_params(Capital, {"rate": "Auto"}, PATH)
    assert problems == []
    assert instance == Capital(rate=None)


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ([1, 2], "an array"),
        ("threshold=0.5", "a string 'threshold=0.5'"),
        (3, "an integer 3"),
        (True, "a boolean True"),
    ],
)
def test_structure_params_rejects_params_that_are_not_an_object(raw: object, kind: str) -> None:
    path, message = only_problem(VADParams, raw)
    assert path == PATH
    assert message == f"params must be an object, got {kind}."


def test_structure_params_reports_every_problem() -> None:
    raw = {"treshold": 0.5, "speech_pad_ms": "30", "min_speech_duration_ms": -1}
    instance, problems = structure_params(VADParams, raw, PATH)
    assert instance is None
    assert [p.path for p in problems] == [
        f"{PATH}.treshold",
        f"{PATH}.speech_pad_ms",
        f"{PATH}.min_speech_duration_ms",
    ]


@pytest.mark.parametrize(
    ("cls", "raw", "expected"),
    [
        (
            VADParams,
            {"threshold": 0.5, "neg_threshold": 0.6},
            "neg_threshold (0.6) must not exceed threshold (0.5).",
        ),
        (
            AccumulatorParams,
            {"min_utterance_duration_ms": 5000, "max_utterance_duration_ms": 1000},
            "min_utterance_duration_ms (5000) must not exceed max_utterance_duration_ms (1000).",
        ),
        (Window, {"low": 50, "high": 20}, "low (50) must not exceed high (20)."),
        (
            TextCollectorParams,
            {"split_pattern": "("},
            "split_pattern is not a valid regular expression: missing ),",
        ),
    ],
)
def test_structure_params_reports_cross_field_check_at_params_path(
    cls: type, raw: dict, expected: str
) -> None:
    path, message = only_problem(cls, raw)
    assert path == PATH
    assert message.startswith(expected)


def test_structure_params_cross_field_check_passes_at_equality() -> None:
    instance, problems = structure_params(VADParams, {"threshold": 0.4, "neg_threshold": 0.4}, PATH)
    assert problems == []
    assert instance.effective_neg_threshold == 0.4


def test_param_validator_rejects_out_of_range_in_constructor() -> None:
    with pytest.raises(ValueError, match=r"^chunk_size must be at least 1 \(and at most 65536\)"):
        ChunkerParams(chunk_size=0)


def test_describe_params_lists_each_field() -> None:
    keys = ("name", "type", "default", "range", "doc")
    described = describe_params(Tiny)
    assert all(tuple(entry) == keys for entry in described)
    assert [tuple(entry.values()) for entry in described] == [
        ("count", "integer", 3, ">=1 and <=10", "How many."),
        ("ratio", "number", 0.5, ">0", "A ratio."),
        ("mode", "string", "Fast", "Fast | Slow", "The mode."),
        ("rate", "integer or null", None, ">0", "A rate."),
        ("label", "string or null", None, "", "A label."),
        ("tags", "list of string", [], "", "Some tags."),
    ]


def test_describe_params_of_real_params_class() -> None:
    by_name = {entry["name"]: entry for entry in describe_params(VADParams)}
    assert by_name["sampling_rate"]["range"] == "8000 | 16000"
    assert by_name["threshold"]["range"] == ">=0 and <=1"
    assert by_name["neg_threshold"]["type"] == "number or null"
    assert by_name["min_silence_duration_ms"]["default"] == 100
    assert by_name["speech_pad_ms"]["doc"] == "Padding added before starts and after ends."


def test_describe_params_of_paramless_class_is_empty() -> None:
    assert describe_params(NoParams) == []


@pytest.mark.parametrize(
    ("snake", "camel"),
    [("min_silence_duration_ms", "minSilenceDurationMs"), ("chunk_size", "chunkSize"), ("x", "x")],
)
def test_camel_case_converts_snake_names(snake: str, camel: str) -> None:
    assert camel_case(snake) == camel


def test_closest_is_case_insensitive_and_none_when_far() -> None:
    assert closest("sileroVADnode", ["SileroVADNode", "PassThrough"]) == "SileroVADNode"
    assert closest("qqqq", ["SileroVADNode", "PassThrough"]) is None


def test_a_list_param_takes_an_array_not_a_string_that_happens_to_iterate() -> None:
    from remotemedia.nodes.conversation.coordinator import CoordinatorParams

    params, problems = structure_params(CoordinatorParams, {"barge_in_targets": ["audio"]}, "p")
    assert problems == []
    assert params is not None
    assert params.barge_in_targets == ("audio",)
    _, problems = structure_params(CoordinatorParams, {"barge_in_targets": "audio"}, "p")
    assert [(p.path, p.message) for p in problems] == [
        ("p.barge_in_targets", "expected list of string, got a string 'audio'.")
    ]
