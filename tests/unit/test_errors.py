"""Helpers of the error hierarchy."""

from __future__ import annotations

from remotemedia.errors import NodeError, leaf_errors


def test_leaf_errors_looks_through_nested_groups_in_order() -> None:
    first, second, third = ValueError("a"), NodeError("n", "T", "b"), KeyError("c")
    group = BaseExceptionGroup("outer", [first, ExceptionGroup("inner", [second, third])])
    assert list(leaf_errors(group)) == [first, second, third]


def test_leaf_errors_of_a_plain_error_is_itself() -> None:
    error = RuntimeError("x")
    assert list(leaf_errors(error)) == [error]
