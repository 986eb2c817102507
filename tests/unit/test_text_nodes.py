"""Unit tests for TextCollectorNode, CalculatorNode, PassThrough and Echo."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from remotemedia.media import Audio, Binary, Json, RuntimeData, Text
from remotemedia.nodes.calculator import CalculatorNode, CalculatorParams
from remotemedia.nodes.passthrough import Echo, PassThrough
from remotemedia.nodes.text.collector import TextCollectorNode, TextCollectorParams
from remotemedia.params import structure_params


def collector(**params: Any) -> TextCollectorNode:
    return TextCollectorNode("collect", TextCollectorParams(**params))


def texts(outputs: list[RuntimeData]) -> list[str]:
    assert all(isinstance(o, Text) for o in outputs)
    return [o.text for o in outputs]  # type: ignore[union-attr]


def feed(node: TextCollectorNode, fragments: list[str]) -> list[list[str]]:
    return [texts(node.process(Text(f))) for f in fragments]


# --- TextCollectorNode -------------------------------------------------------------


def test_text_collector_splits_sentences_across_fragments() -> None:
    node = collector()
    per_fragment = feed(node, ["Hello wor", "ld. How are", " you? I am fi", "ne! And"])
    assert per_fragment == [[], ["Hello world."], ["How are you?"], ["I am fine!"]]
    assert texts(node.flush()) == ["And"]
    assert node.flush() == []


def test_text_collector_emits_several_sentences_from_one_fragment() -> None:
    node = collector()
    assert feed(node, ["One; two\nthree. four"]) == [["One;", "two", "three."]]
    assert texts(node.flush()) == ["four"]


def test_text_collector_joins_sentences_shorter_than_minimum() -> None:
    node = collector(min_sentence_length=8)
    assert feed(node, ["Hi. Ok. ", "Then more. Yes."]) == [[], ["Hi. Ok. Then more."]]
    assert texts(node.flush()) == ["Yes."]


def test_text_collector_uses_custom_split_pattern() -> None:
    node = collector(split_pattern=r"[|]", min_sentence_length=1)
    assert feed(node, ["a. b|c", "|d"]) == [["a. b|"], ["c|"]]
    assert texts(node.flush()) == ["d"]


def test_text_collector_params_reject_invalid_regex() -> None:
    with pytest.raises(ValueError, match="split_pattern is not a valid regular expression"):
        TextCollectorParams(split_pattern="([a-z")


def test_text_collector_structure_params_reports_invalid_regex() -> None:
    params, problems = structure_params(
        TextCollectorParams, {"splitPattern": "(unclosed"}, "$.nodes[0].params"
    )
    assert params is None
    assert len(problems) == 1
    assert problems[0].path == "$.nodes[0].params"
    assert "split_pattern is not a valid regular expression" in problems[0].message


def test_text_collector_structure_params_accepts_valid_values() -> None:
    params, problems = structure_params(
        TextCollectorParams, {"split_pattern": "[,]", "min_sentence_length": 2}, "$"
    )
    assert problems == []
    assert params == TextCollectorParams(split_pattern="[,]", min_sentence_length=2)


@pytest.mark.parametrize("marker", ["<|text_end|>", " <|audio_end|>\n"])
def test_text_collector_end_marker_flushes_partial_and_passes_marker(marker: str) -> None:
    node = collector()
    node.process(Text("Done. Unfinished thought"))
    outputs = node.process(Text(marker))
    assert outputs == [Text("Unfinished thought"), Text(marker)]
    assert node.flush() == []  # the buffer was emptied


def test_text_collector_end_marker_with_empty_buffer_passes_marker_only() -> None:
    node = collector()
    assert node.process(Text("<|text_end|>")) == [Text("<|text_end|>")]


def test_text_collector_without_partial_on_end_drops_unfinished_text() -> None:
    node = collector(yield_partial_on_end=False)
    assert feed(node, ["Whole one. half"]) == [["Whole one."]]
    assert node.process(Text("<|text_end|>")) == [Text("<|text_end|>")]
    node.process(Text("more"))
    assert node.flush() == []
    # The dropped text does not leak into the next sentence.
    assert feed(node, ["Next."]) == [["Next."]]


def test_text_collector_non_default_channel_bypasses_splitting() -> None:
    node = collector()
    display = Text("no boundary here", channel="display")
    assert node.process(display) == [display]
    assert feed(node, ["Kept"]) == [[]]
    assert node.process(Text(" going.", channel="tts")) == [Text("Kept going.")]


def test_text_collector_passes_other_kinds_through() -> None:
    node = collector()
    blob = Binary(b"\x01")
    outputs = node.process(blob)
    assert len(outputs) == 1
    assert outputs[0] is blob


# --- CalculatorNode ----------------------------------------------------------------


def calculate(request: Any, operation: str | None = None) -> Any:
    node = CalculatorNode("calc", CalculatorParams(operation=operation))
    output = node.process(Json(request))
    assert isinstance(output, Json)
    return output.value


@pytest.mark.parametrize(
    ("operation", "operands", "result"),
    [
        ("add", [1, 2, 3, 4], 10),
        ("subtract", [10, 3, 2], 5),
        ("multiply", [2, 3, 4], 24),
        ("divide", [100, 5, 2], 10.0),
        ("add", [0.5, 0.25, 1], 1.75),
        ("subtract", [1, 2.5], -1.5),
    ],
)
def test_calculator_applies_operation_left_to_right(
    operation: str, operands: list[float], result: float
) -> None:
    value = calculate({"operation": operation, "operands": operands})
    assert value == {"operation": operation, "operands": operands, "result": result}
    assert type(value["result"]) is type(result)


def test_calculator_integer_results_stay_integers_up_to_2_pow_53() -> None:
    exact = calculate({"operation": "multiply", "operands": [2**20, 2**30]})["result"]
    assert exact == 2**50
    assert type(exact) is int
    assert type(calculate({"operation": "add", "operands": [3, -3]})["result"]) is int
    # Beyond 2**53 a float no longer holds every integer: the result stays a float.
    big = calculate({"operation": "multiply", "operands": [2**40, 2**30]})["result"]
    assert big == float(2**70)
    assert type(big) is float


def test_calculator_refuses_huge_integers_and_too_many_operands() -> None:
    with pytest.raises(ValueError, match=r"integer operands must be within \+/-9e\+15"):
        calculate({"operation": "add", "operands": [10**40, 1]})
    with pytest.raises(ValueError, match="operands must be a list of 2 to 10000 numbers"):
        calculate({"operation": "add", "operands": [1] * 10_001})


def test_calculator_division_gives_float() -> None:
    result = calculate({"operation": "divide", "operands": [7, 2]})["result"]
    assert result == 3.5
    assert calculate({"operation": "divide", "operands": [1, 3]})["result"] == pytest.approx(1 / 3)


def test_calculator_uses_params_operation_when_request_has_none() -> None:
    value = calculate({"operands": [6, 7]}, operation="multiply")
    assert value == {"operation": "multiply", "operands": [6, 7], "result": 42}


def test_calculator_params_operation_accepts_any_case() -> None:
    assert CalculatorParams(operation="ADD").operation == "add"
    with pytest.raises(ValueError, match="operation must be one of"):
        CalculatorParams(operation="power")


def test_calculator_request_operation_overrides_params() -> None:
    assert calculate({"operation": "subtract", "operands": [6, 7]}, "add")["result"] == -1


@pytest.mark.parametrize(
    "request_value", [{"operation": "modulo", "operands": [1, 2]}, {"operands": [1, 2]}]
)
def test_calculator_rejects_unknown_or_missing_operation(request_value: Any) -> None:
    with pytest.raises(
        ValueError, match="operation must be one of add, subtract, multiply, divide"
    ):
        calculate(request_value)


@pytest.mark.parametrize(
    "operands", [None, 5, [1], [], [1, "2"], [1, True], [1, None], "12", [[1], 2]]
)
def test_calculator_rejects_bad_operands(operands: Any) -> None:
    with pytest.raises(ValueError, match="operands must be a list of 2 to 10000 numbers"):
        calculate({"operation": "add", "operands": operands})


@pytest.mark.parametrize("operands", [[1, 0], [5, 2, 0.0]])
def test_calculator_rejects_division_by_zero(operands: list[float]) -> None:
    with pytest.raises(ValueError, match="division by zero"):
        calculate({"operation": "divide", "operands": operands})


def test_calculator_rejects_overflowing_result() -> None:
    with pytest.raises(ValueError, match="not finite"):
        calculate({"operation": "multiply", "operands": [1e308, 10.0]})


@pytest.mark.parametrize("data", [Json([1, 2]), Json("add"), Text('{"operation": "add"}')])
def test_calculator_rejects_non_object_input(data: RuntimeData) -> None:
    node = CalculatorNode("calc", CalculatorParams())
    with pytest.raises(TypeError, match="expects a JSON object"):
        node.process(data)


# --- PassThrough and Echo ----------------------------------------------------------


@pytest.mark.parametrize("cls", [PassThrough, Echo])
@pytest.mark.parametrize(
    "data", [Text("x"), Json({"a": 1}), Audio(np.zeros(4, np.float32), 16_000)]
)
def test_passthrough_returns_the_same_object(cls: type[PassThrough], data: RuntimeData) -> None:
    node = cls("p", cls.Params())
    assert node.process(data) is data
    assert node.flush() is None


def test_passthrough_node_types() -> None:
    assert (PassThrough.node_type, Echo.node_type) == ("PassThrough", "Echo")
    assert PassThrough.describe() == "Forward every input unchanged."


@pytest.mark.parametrize("pattern", ["(a+)+$", "a|b", ".*", "[.]|x"])
def test_text_collector_refuses_patterns_that_could_backtrack(pattern: str) -> None:
    with pytest.raises(ValueError, match="split_pattern must be one character class"):
        TextCollectorParams(split_pattern=pattern)


def test_text_collector_cuts_text_without_boundaries_after_the_last_word_that_fits() -> None:
    node = collector(max_sentence_length=12)
    assert feed(node, ["one two three fo", "ur five"]) == [["one two"], ["three four"]]
    assert texts(node.flush()) == ["five"]


def test_text_collector_cuts_a_sentence_longer_than_the_limit_at_words() -> None:
    node = collector(max_sentence_length=12)
    assert feed(node, ["one two three four five six. Short."]) == [
        ["one two", "three four", "five six.", "Short."]
    ]


def test_text_collector_cuts_a_word_longer_than_the_limit_where_the_limit_falls() -> None:
    node = collector(max_sentence_length=5)
    assert feed(node, ["ab abcdefghijkl xyz"]) == [["ab", "abcde", "fghij", "kl"]]
    assert texts(node.flush()) == ["xyz"]


def test_text_collector_pieces_of_a_long_text_without_punctuation_fit_a_voice() -> None:
    words = [f"w{i:05d}" for i in range(30_000)]
    pieces = texts(collector().process(Text(" ".join(words))))
    assert max(len(piece) for piece in pieces) <= 300  # the default
    assert " ".join(pieces).split() == words[: len(" ".join(pieces).split())]
