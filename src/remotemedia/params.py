"""Declaring node parameters, and checking raw manifest params against them.

A node type declares its parameters as an attrs class whose fields are made with
:func:`param`. :func:`structure_params` turns the raw JSON mapping from a manifest
into an instance of that class, and reports *every* problem with its path:
unknown keys (with the closest known name), wrong types, values out of range or
not among the allowed choices. Both ``snake_case`` names and their ``camelCase``
forms are accepted, as the original runtime does.

The original runtime ignored params a node does not declare, and its own example
manifests rely on that; so :func:`structure_params` can skip them
(``ignore_unknown``) and :func:`unknown_params` lists them for a warning instead.

This module is sans-IO: no Trio, no files.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import math
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, get_args, get_origin

import attrs
import cattrs

from remotemedia.errors import Problem

__all__ = [
    "ParamInfo",
    "UnknownParam",
    "camel_case",
    "closest",
    "count_unknown_params",
    "describe_json",
    "describe_params",
    "param",
    "restricted_params",
    "strict_converter",
    "structure_params",
    "unknown_params",
]

T = TypeVar("T")

_META_KEY = "remotemedia"


@attrs.frozen
class ParamInfo:
    """How one parameter is described and checked.

    Attributes:
        doc: One-line description for ``remotemedia nodes``.
        ge: Inclusive lower bound, if any.
        le: Inclusive upper bound, if any.
        gt: Exclusive lower bound, if any.
        choices: Allowed values (strings match case-insensitively), if restricted.
        auto: A string (such as ``"auto"``) that means "no value" for an optional param.
        server_path: The value is a file path on the machine that runs the node; a
            server refuses it from remote clients unless told to trust them.
        server_only: Only the server's operator may set it (``--node-config``); a
            server refuses it from every client (running a model's own code, say).
    """

    doc: str = ""
    ge: float | None = None
    le: float | None = None
    gt: float | None = None
    choices: tuple[Any, ...] | None = None
    auto: str | None = None
    server_path: bool = False
    server_only: bool = False

    def check(self, value: Any) -> str | None:
        """Return why ``value`` is out of range, or None when it is acceptable."""
        if value is None:
            return None
        if self.choices is not None:
            allowed = ", ".join(repr(c) for c in self.choices)
            if _fold(value) not in {_fold(c) for c in self.choices}:
                return f"must be one of {allowed}, got {value!r}"
            return None
        if not isinstance(value, int | float):
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be a finite number, got {value!r}"
        if self.gt is not None and not value > self.gt:
            return f"must be greater than {self.gt:g}, got {value!r}"
        if self.ge is not None and value < self.ge:
            return f"must be at least {self.ge:g}{self._upper()}, got {value!r}"
        if self.le is not None and value > self.le:
            return f"must be at most {self.le:g}{self._lower()}, got {value!r}"
        return None

    def range_text(self) -> str:
        """Describe the accepted values, for documentation (``""`` if unrestricted)."""
        if self.choices is not None:
            return " | ".join(str(c) for c in self.choices)
        low = f">{self.gt:g}" if self.gt is not None else None
        low = low or (f">={self.ge:g}" if self.ge is not None else None)
        high = f"<={self.le:g}" if self.le is not None else None
        return " and ".join(part for part in (low, high) if part)

    def _upper(self) -> str:
        return f" (and at most {self.le:g})" if self.le is not None else ""

    def _lower(self) -> str:
        return f" (and at least {self.ge:g})" if self.ge is not None else ""


def _fold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def param(
    default: Any,
    *,
    doc: str,
    ge: float | None = None,
    le: float | None = None,
    gt: float | None = None,
    choices: Sequence[Any] | None = None,
    auto: str | None = None,
    server_path: bool = False,
    server_only: bool = False,
) -> Any:
    """Declare one node parameter as an attrs field.

    Args:
        default: The value used when the manifest omits the parameter.
        doc: One-line description shown by ``remotemedia nodes``.
        ge: Inclusive lower bound.
        le: Inclusive upper bound.
        gt: Exclusive lower bound.
        choices: The allowed values; strings are matched case-insensitively and
            normalised to the spelling given here.
        auto: A string that stands for None (for example ``"auto"`` for a rate that
            is detected from the data).
        server_path: The value names a file on the machine running the node (a model
            file); servers refuse such values from remote clients by default.
        server_only: Only the server's own node config may set it; every client
            is refused (see :class:`ParamInfo`).

    Returns:
        An attrs field definition; use it as a class attribute's value.
    """
    info = ParamInfo(
        doc=doc,
        ge=ge,
        le=le,
        gt=gt,
        choices=tuple(choices) if choices is not None else None,
        auto=auto,
        server_path=server_path,
        server_only=server_only,
    )

    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        reason = info.check(value)
        if reason is not None:
            raise ValueError(f"{attribute.name} {reason}")

    converter = _normaliser(info.choices) if info.choices is not None else None
    return attrs.field(
        default=default,
        validator=validate,
        converter=converter,
        metadata={_META_KEY: info},
    )


def _normaliser(choices: tuple[Any, ...]) -> Callable[[Any], Any]:
    canonical = {_fold(c): c for c in choices}

    def normalise(value: Any) -> Any:
        return canonical.get(_fold(value), value)

    return normalise


def info_of(field: attrs.Attribute[Any]) -> ParamInfo:
    """Return the :class:`ParamInfo` of a field (an empty one if it was not made by param)."""
    info = field.metadata.get(_META_KEY)
    return info if isinstance(info, ParamInfo) else ParamInfo()


_CAMEL_BOUNDARY = re.compile(r"_([a-z0-9])")


def camel_case(name: str) -> str:
    """Return the camelCase form of a snake_case name (``min_silence_ms`` -> ``minSilenceMs``)."""
    return _CAMEL_BOUNDARY.sub(lambda m: m.group(1).upper(), name)


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """Return the candidate most similar to ``name``, or None if nothing is close."""
    folded = {c.casefold(): c for c in candidates}
    match = difflib.get_close_matches(name.casefold(), list(folded), n=1, cutoff=0.6)
    return folded[match[0]] if match else None


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (tuple, list) and get_args(tp):
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin is not None:
        return str(tp).replace("typing.", "")
    return {
        type(None): "null",
        float: "number",
        int: "integer",
        bool: "boolean",
        str: "string",
    }.get(tp, getattr(tp, "__name__", str(tp)))


_JSON_KINDS: dict[type, str] = {
    type(None): "null",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
}
_TYPE_WORDS = {str: "a string", bool: "a boolean", int: "an integer", float: "a number"}


def describe_json(value: Any) -> str:
    """Describe a parsed JSON/YAML value for an error message: ``a string 'x'``, ``an array``."""
    kind = next((w for t, w in _JSON_KINDS.items() if isinstance(value, t)), None)
    if kind is None:
        return type(value).__name__
    return kind if value is None or isinstance(value, list | dict) else f"{kind} {value!r}"


def strict_converter(*, forbid_extra_keys: bool = False) -> cattrs.Converter:
    """Build a converter that accepts JSON types only, with no lossy coercions.

    cattrs would happily turn ``"5"`` into ``5`` or ``1`` into ``True``; a manifest
    that says ``threshold: "0.5"`` is more likely a mistake than a wish, so the
    scalar hooks accept only the matching JSON type (an integer is accepted where a
    number is expected). Their TypeError says what was expected and what came.
    """
    converter = cattrs.Converter(forbid_extra_keys=forbid_extra_keys)

    def exact(tp: type[T], accepts: tuple[type, ...]) -> None:
        def hook(value: Any, _: Any) -> T:
            if not isinstance(value, accepts) or (isinstance(value, bool) and tp is not bool):
                raise TypeError(f"expected {_TYPE_WORDS[tp]}, got {describe_json(value)}")
            return tp(value)  # type: ignore[call-arg]

        converter.register_structure_hook(tp, hook)

    exact(bool, (bool,))
    exact(int, (int,))
    exact(float, (int, float))
    exact(str, (str,))

    def is_sequence(tp: Any) -> bool:
        return get_origin(tp) in (tuple, list)

    def sequence(tp: Any) -> Callable[[Any, Any], Any]:
        item = get_args(tp)[0] if get_args(tp) else Any
        build = tuple if get_origin(tp) is tuple else list

        def hook(value: Any, _: Any) -> Any:
            # A string is iterable too, but 'audio' is not ['a', 'u', 'd', 'i', 'o'].
            if not isinstance(value, list | tuple):
                raise TypeError(f"expected an array, got {describe_json(value)}")
            return build(converter.structure(v, item) for v in value)

        return hook

    converter.register_structure_hook_factory(is_sequence, sequence)
    return converter


_CONVERTER = strict_converter()


@functools.cache
def _field_names(cls: type) -> dict[str, attrs.Attribute[Any]]:
    # Params classes use postponed annotations; resolve them once per class.
    attrs.resolve_types(cls)
    return {field.name: field for field in attrs.fields(cls)}


def structure_params(
    cls: type[T], raw: Any, path: str, *, ignore_unknown: bool = False
) -> tuple[T | None, list[Problem]]:
    """Check raw manifest params against a params class and build an instance.

    Args:
        cls: An attrs class whose fields were declared with :func:`param`.
        raw: The ``params`` value from the manifest (a mapping, or None for defaults).
        path: The JSON path of ``raw`` in the manifest, used in problem paths.
        ignore_unknown: Skip keys that name no parameter instead of reporting them
            (list them with :func:`unknown_params` to warn about them).

    Returns:
        The params instance (None if there were problems) and every problem found.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        return None, [Problem(path, f"params must be an object, got {describe_json(raw)}.")]
    fields = _field_names(cls)  # type: ignore[arg-type]  # classes are hashable
    aliases = {camel_case(name): name for name in fields if camel_case(name) != name}
    problems: list[Problem] = []
    values: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, value in raw.items():
        name = key if key in fields else aliases.get(key)
        if name is None:
            if not ignore_unknown:
                problems.append(Problem(f"{path}.{key}", _unknown(key, fields).describe()))
            continue
        if name in given_as:
            problems.append(
                Problem(
                    f"{path}.{key}",
                    f"'{key}' repeats '{given_as[name]}'; give each parameter once.",
                )
            )
            continue
        given_as[name] = key
        field = fields[name]
        info = info_of(field)
        if info.auto is not None and isinstance(value, str) and _fold(value) == _fold(info.auto):
            value = None
        try:
            converted = _CONVERTER.structure(value, field.type)  # type: ignore[arg-type]
        except Exception:
            expected = _type_name(field.type)
            if info.auto is not None:
                expected += f" or '{info.auto}'"
            problems.append(
                Problem(f"{path}.{key}", f"expected {expected}, got {describe_json(value)}.")
            )
            continue
        reason = info.check(converted)
        if reason is not None:
            problems.append(Problem(f"{path}.{key}", f"{reason}."))
            continue
        values[name] = converted
    if problems:
        return None, problems
    try:
        instance = cls(**values)
    except ValueError as exc:  # a cross-field check in __attrs_post_init__
        return None, [Problem(path, f"{exc}.")]
    return instance, []


@attrs.frozen
class UnknownParam:
    """A key of raw params that names no parameter of the params class.

    Attributes:
        name: The key as written in the manifest.
        closest: The most similar declared name (or camelCase form), or None when
            nothing is similar enough to be a likely misspelling.
        allowed: Every declared parameter name.
    """

    name: str
    closest: str | None
    allowed: tuple[str, ...]

    def describe(self) -> str:
        """Say what is wrong, suggest the closest name and list the allowed ones."""
        hint = f" Did you mean '{self.closest}'?" if self.closest else ""
        allowed = ", ".join(self.allowed) or "none"
        return f"unknown parameter '{self.name}'.{hint} Allowed parameters: {allowed}."


def unknown_params(cls: type, raw: Any, *, limit: int | None = None) -> list[UnknownParam]:
    """List the keys of raw params that name no parameter of ``cls`` (nor its camelCase form).

    Args:
        cls: An attrs class whose fields were declared with :func:`param`.
        raw: The ``params`` value from the manifest; anything but a mapping has none.
        limit: List at most this many (finding the closest name costs time, and a
            hostile manifest may hold thousands); :func:`count_unknown_params`
            says how many there are.

    Returns:
        Each unknown key, in the order written, with the closest known name.
    """
    if not isinstance(raw, Mapping):
        return []
    fields = _field_names(cls)
    aliases = {camel_case(name) for name in fields}
    unknown = (key for key in raw if key not in fields and key not in aliases)
    return [_unknown(key, fields) for key in itertools.islice(unknown, limit)]


def count_unknown_params(cls: type, raw: Any) -> int:
    """How many keys of raw params name no parameter of ``cls`` (see :func:`unknown_params`)."""
    if not isinstance(raw, Mapping):
        return 0
    fields = _field_names(cls)
    aliases = {camel_case(name) for name in fields}
    return sum(1 for key in raw if key not in fields and key not in aliases)


def _unknown(key: Any, fields: Mapping[str, Any]) -> UnknownParam:
    name = str(key)  # YAML allows keys such as 1 or true
    guess = closest(name, list(fields) + [camel_case(f) for f in fields])
    return UnknownParam(name, guess, tuple(fields))


def restricted_params(cls: type, raw: Any) -> list[tuple[str, ParamInfo]]:
    """The params a client set in ``raw`` that are server paths or server-only.

    A param set to its default value chooses nothing, and is not counted.

    Returns:
        ``(key as the client wrote it, its ParamInfo)`` for each.
    """
    if not isinstance(raw, Mapping):
        return []
    fields = _field_names(cls)
    aliases = {camel_case(name): name for name in fields}
    found = []
    for key in raw:
        name = key if key in fields else aliases.get(key)
        if name is None:
            continue
        info = info_of(fields[name])
        if (info.server_path or info.server_only) and raw[key] != fields[name].default:
            found.append((str(key), info))
    return found


def describe_params(cls: type) -> list[dict[str, Any]]:
    """Describe each parameter of a params class: name, type, default, range and doc."""
    described = []
    for field in _field_names(cls).values():
        info = info_of(field)
        default: Any = field.default
        if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
            default = default.factory()
        if isinstance(default, tuple):  # a list in a manifest
            default = list(default)
        described.append(
            {
                "name": field.name,
                "type": _type_name(field.type),
                "default": default,
                "range": info.range_text(),
                "doc": info.doc,
            }
        )
    return described
