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
            or len(operands) < 2
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in operands)
        ):
            raise ValueError(f"operands must be a list of at least two numbers, got {operands!r}")
        if operation == "divide" and any(x == 0 for x in operands[1:]):
            raise ValueError("division by zero")
        result = reduce(OPERATIONS[operation], operands)
        if (
            isinstance(result, float)
            and result.is_integer()
            and all(isinstance(x, int) for x in operands)
            and operation != "divide"
        ):
            result = int(result)
        if isinstance(result, float) and not math.isfinite(result):
            raise ValueError(f"the result of {operation} over {operands} is not finite")
        return Json({"operation": operation, "operands": operands, "result": result})
