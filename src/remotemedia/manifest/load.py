"""Parsing manifest text (YAML or JSON) into :class:`~remotemedia.manifest.schema.Manifest`.

Structuring is done per node and per connection, so one malformed node does not hide
the problems of the others: every problem is collected with its JSON path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, get_args, get_origin

import attrs
import cattrs
import yaml
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn, override

from remotemedia.errors import Problem
from remotemedia.manifest.schema import Connection, Manifest, Metadata, NodeSpec, PythonEnv
from remotemedia.params import closest, describe_json, strict_converter

__all__ = ["StructuredManifest", "parse_text", "structure_manifest"]

T = TypeVar("T")


def parse_text(text: str, *, source: str = "<string>") -> tuple[Any, list[Problem]]:
    """Parse manifest text as JSON (if it looks like JSON) or YAML.

    Args:
        text: The manifest's text.
        source: A name for error messages, typically the file path.

    Returns:
        The parsed document (None on failure) and the syntax problems found.
    """
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            return json.loads(text), []
        except json.JSONDecodeError as exc:
            message = f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}."
            return None, [Problem("$", message)]
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        return None, [Problem("$", f"invalid YAML{where}: {reason}.")]
    if _expanded_size(document, {}) > MAX_EXPANDED_VALUES:
        # YAML aliases share one object, so loading is cheap; anything that walks
        # the document (validation, JSON for the wire) would expand it.
        message = (
            f"the YAML expands to more than {MAX_EXPANDED_VALUES:,} values through its "
            "aliases (*name); a manifest needs far fewer. Is it an alias bomb?"
        )
        return None, [Problem("$", message)]
    return document, []


MAX_EXPANDED_VALUES = 1_000_000
"""Values a manifest may hold once its YAML aliases are expanded."""


def _expanded_size(value: Any, sizes: dict[int, int]) -> int:
    """How many values ``value`` holds once its aliases are expanded (shared parts sized once)."""
    if not isinstance(value, dict | list):
        return 1
    known = sizes.get(id(value))
    if known is not None:
        return known
    sizes[id(value)] = 1  # a self-referencing alias counts once, instead of forever
    children = value.items() if isinstance(value, dict) else enumerate(value)
    total = 1
    for _, child in children:
        total += _expanded_size(child, sizes)
        if total > MAX_EXPANDED_VALUES:
            break
    sizes[id(value)] = total
    return total


def _build_converter() -> cattrs.Converter:
    converter = strict_converter(forbid_extra_keys=True)

    def structure_mapping(value: Any, tp: Any) -> Mapping[str, Any] | None:
        if value is None:
            # `params: null` is how the original spells "no params".
            return None if tp != Mapping[str, Any] else {}
        if not isinstance(value, Mapping):
            raise TypeError(f"expected an object, got {describe_json(value)}")
        return dict(value)

    mapping_types = (Mapping[str, Any], Mapping[str, Any] | None)
    converter.register_structure_hook_func(lambda tp: tp in mapping_types, structure_mapping)

    def structure_literal(value: Any, tp: Any) -> Any:
        allowed = get_args(tp)
        if value not in allowed:
            choices = ", ".join(repr(a) for a in allowed)
            raise ValueError(f"expected one of {choices}, got {describe_json(value)}")
        return value

    def is_literal(tp: Any) -> bool:
        return get_origin(tp) is Literal

    converter.register_structure_hook_func(is_literal, structure_literal)
    converter.register_structure_hook(
        Connection,
        make_dict_structure_fn(
            Connection,
            converter,
            source=override(rename="from"),
            target=override(rename="to"),
        ),
    )

    known_metadata = {f.name for f in attrs.fields(Metadata)} - {"extra"}
    plain_metadata = make_dict_structure_fn(Metadata, converter)

    def structure_metadata(value: Any, _: Any) -> Metadata:
        if not isinstance(value, Mapping):
            raise TypeError(f"expected an object, got {describe_json(value)}")
        known = {k: v for k, v in value.items() if k in known_metadata}
        extra = {k: v for k, v in value.items() if k not in known_metadata}
        return attrs.evolve(plain_metadata(known, Metadata), extra=extra)

    converter.register_structure_hook(Metadata, structure_metadata)
    return converter


_CONVERTER = _build_converter()

_MANIFEST_KEYS = ("version", "metadata", "nodes", "connections", "python_env")


def _allowed_keys(cls: type) -> list[str]:
    renames = {"source": "from", "target": "to"} if cls is Connection else {}
    return [renames.get(f.name, f.name) for f in attrs.fields(cls)]


def _flatten(exc: BaseException, path: str, cls: type) -> list[Problem]:
    """Turn a cattrs validation error tree into problems with JSON paths."""
    problems: list[Problem] = []
    if isinstance(exc, ForbiddenExtraKeysError):
        allowed = _allowed_keys(exc.cl)
        for key in sorted(exc.extra_fields):
            guess = closest(key, allowed)
            hint = f" Did you mean '{guess}'?" if guess else ""
            problems.append(
                Problem(
                    f"{path}.{key}",
                    f"unknown key '{key}'.{hint} Allowed keys: {', '.join(allowed)}.",
                )
            )
        return problems
    if isinstance(exc, cattrs.ClassValidationError):
        with_notes, without = exc.group_exceptions()
        for sub, note in with_notes:
            name = note.name
            if cls is Connection:
                name = {"source": "from", "target": "to"}.get(name, name)
            sub_type = note.type
            problems += _flatten(sub, f"{path}.{name}", sub_type if attrs.has(sub_type) else cls)
        for sub in without:
            problems += _flatten(sub, path, cls)
        return problems
    if isinstance(exc, cattrs.IterableValidationError):
        item_notes, without = exc.group_exceptions()
        for sub, item_note in item_notes:
            problems += _flatten(sub, f"{path}[{item_note.index}]", cls)
        for sub in without:
            problems += _flatten(sub, path, cls)
        return problems
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            problems += _flatten(inner, path, cls)
        return problems
    if isinstance(exc, KeyError):
        return [Problem(path, "this required key is missing.")]
    message = str(exc) or "has the wrong type"
    return [Problem(path, f"{message}.")]


def _structure(value: Any, cls: type[T], path: str) -> tuple[T | None, list[Problem]]:
    if not isinstance(value, Mapping):
        return None, [Problem(path, f"expected an object, got {describe_json(value)}.")]
    try:
        return _CONVERTER.structure(value, cls), []
    except Exception as exc:
        return None, _flatten(exc, path, cls)


@attrs.frozen
class StructuredManifest:
    """The result of structuring a parsed manifest document.

    Attributes:
        manifest: The manifest holding every node and connection that structured
            cleanly (so that later checks can still run); None if the document was
            not usable at all.
        problems: Every structural problem found.
        unparsed_node_ids: Ids of nodes that failed to structure, so that
            connections to them are not also reported as dangling.
        node_positions: For each node of ``manifest``, its index in the document
            (they differ once a node fails to structure), for problem paths.
        connection_positions: The same for connections.
    """

    manifest: Manifest | None
    problems: list[Problem]
    unparsed_node_ids: frozenset[str] = frozenset()
    node_positions: tuple[int, ...] | None = None
    connection_positions: tuple[int, ...] | None = None


def structure_manifest(document: Any) -> StructuredManifest:
    """Structure a parsed YAML/JSON document into a manifest, collecting every problem.

    Args:
        document: The parsed document, normally a mapping.

    Returns:
        The manifest (as complete as possible) and the problems found.
    """
    if not isinstance(document, Mapping):
        return StructuredManifest(
            None,
            [Problem("$", f"a manifest must be an object, got {describe_json(document)}.")],
        )
    problems: list[Problem] = []
    for key in document:
        if key not in _MANIFEST_KEYS:
            guess = closest(str(key), _MANIFEST_KEYS)
            hint = f" Did you mean '{guess}'?" if guess else ""
            allowed = ", ".join(_MANIFEST_KEYS)
            problems.append(
                Problem(f"$.{key}", f"unknown key '{key}'.{hint} Allowed keys: {allowed}.")
            )
    version = document.get("version")
    if version is None:
        problems.append(Problem("$.version", 'this required key is missing; use version: "v1".'))
    elif not isinstance(version, str):
        problems.append(
            Problem("$.version", f'expected a string such as "v1", got {describe_json(version)}.')
        )
    metadata = Metadata()
    if document.get("metadata") is not None:
        structured, found = _structure(document["metadata"], Metadata, "$.metadata")
        metadata = structured or metadata
        problems += found
    nodes, node_positions, unparsed, found = _structure_nodes(document.get("nodes"))
    problems += found
    connections, connection_positions, found = _structure_list(
        document.get("connections"), "$.connections", Connection
    )
    problems += found
    python_env = None
    if document.get("python_env") is not None:
        python_env, found = _structure(document["python_env"], PythonEnv, "$.python_env")
        problems += found
    manifest = Manifest(
        version=version if isinstance(version, str) else "",
        metadata=metadata,
        nodes=nodes,
        connections=connections,
        python_env=python_env,
    )
    return StructuredManifest(
        manifest, problems, frozenset(unparsed), node_positions, connection_positions
    )


def _structure_nodes(
    raw: Any,
) -> tuple[list[NodeSpec], tuple[int, ...], list[str], list[Problem]]:
    if raw is None:
        missing = Problem("$.nodes", "this required key is missing; list the nodes here.")
        return [], (), [], [missing]
    nodes, positions, problems = _structure_list(raw, "$.nodes", NodeSpec)
    unparsed = []
    if isinstance(raw, list):
        good_ids = {n.id for n in nodes}
        unparsed = [
            item["id"]
            for item in raw
            if isinstance(item, Mapping)
            and isinstance(item.get("id"), str)
            and item["id"] not in good_ids
        ]
    return nodes, positions, unparsed, problems


def _structure_list(
    raw: Any, path: str, cls: type[T]
) -> tuple[list[T], tuple[int, ...], list[Problem]]:
    """Structure each item; return the good ones, their indices in ``raw``, and problems."""
    if raw is None:
        return [], (), []
    if not isinstance(raw, list):
        return [], (), [Problem(path, f"expected an array, got {describe_json(raw)}.")]
    items: list[T] = []
    positions: list[int] = []
    problems: list[Problem] = []
    for index, item in enumerate(raw):
        structured, found = _structure(item, cls, f"{path}[{index}]")
        problems += found
        if structured is not None:
            items.append(structured)
            positions.append(index)
    return items, tuple(positions), problems
