"""The base of every event: a Json whose value its fields make (rule 1 of the package)."""

from __future__ import annotations

from typing import Any

import attrs

from remotemedia.media import Json, check_json


@attrs.frozen(eq=False)
class Event(Json):
    """A typed message between nodes; as Json, ``value`` is its wire form (rule 1).

    Equal, like any Json, to a Json of the same value; unhashable, like Json.
    """

    value: Any = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        value = self.to_json()
        check_json(value)
        object.__setattr__(self, "value", value)

    def to_json(self) -> dict[str, Any]:
        """The event's wire form, as it goes to a client or a worker."""
        raise NotImplementedError


def put(value: dict[str, Any], key: str, item: object) -> None:
    """Set ``value[key]`` to ``item`` unless it is None (the key is then not on the wire)."""
    if item is not None:
        value[key] = item
