"""``CalculatorNode``: arithmetic over JSON requests, as the original's demo node."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import reduce
from typing import Any

import attrs

from remotemedia.media import Json, RuntimeData
from remotemedia.nodes.base import Node
from remotemedia.params import param

__all__ = ["CalculatorNode", "CalculatorParams"]

OPERATIONS: dict[str, Callable[[float, float], float]] = {
    "add": lambda a, b: a + b,
    "subtract": lambda a, b: a - b,
    "multiply": lambda a, b: a * b,
    "divide": lambda a, b: a / b,
}


MAX_OPERANDS = 10_000
MAX_INTEGER = 2**53
"""Largest integer operand: beyond it a float cannot hold every integer exactly."""


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@attrs.frozen
class CalculatorParams:
    """Parameters of :class:`CalculatorNode`."""

    operation: str | None = param(
        None,
        doc="Operation used when a request names none.",
        choices=tuple(OPERATIONS),
    )


class CalculatorNode(Node[CalculatorParams]):
    """Apply {operation, operands} JSON requests: add, subtract, multiply or divide."""

    node_type = "CalculatorNode"
    Params = CalculatorParams
    accepts = frozenset({"json"})
    produces = frozenset({"json"})

    def process(self, data: RuntimeData) -> Json:
        """Compute ``operands[0] op operands[1] op ...`` and return it with the request."""
        if not isinstance(data, Json) or not isinstance(data.value, dict):
            raise TypeError('expects a JSON object like {"operation": "add", "operands": [1, 2]}')
        request: dict[str, Any] = data.value
        operation = request.get("operation", self.params.operation)
        if operation not in OPERATIONS:
            allowed = ", ".join(OPERATIONS)
            raise ValueError(f"operation must be one of {allowed}, got {operation!r}")
        operands = request.get("operands")
        if (
            not isinstance(operands, list)
            or not 2 <= len(operands) <= MAX_OPERANDS
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in operands)
        ):
            raise ValueError(
                f"operands must be a list of 2 to {MAX_OPERANDS} numbers, got {_preview(operands)}"
            )
        if any(isinstance(x, int) and abs(x) > MAX_INTEGER for x in operands):
            raise ValueError(f"integer operands must be within +/-{MAX_INTEGER:.0e}")
        if operation == "divide" and any(x == 0 for x in operands[1:]):
            raise ValueError("division by zero")
        # Floating point, like the original: bounded time whatever the operands.
        value = reduce(OPERATIONS[operation], [float(x) for x in operands])
        if not math.isfinite(value):
            raise ValueError(f"the result of {operation} over {_preview(operands)} is not finite")
        exact = all(isinstance(x, int) for x in operands) and operation != "divide"
        result = int(value) if exact and value.is_integer() and abs(value) <= MAX_INTEGER else value
        return Json({"operation": operation, "operands": operands, "result": result})
