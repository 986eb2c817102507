"""Pipeline manifests: the ``v1`` schema, loading from YAML/JSON, and validation.

Use :func:`load_manifest` for files, :func:`parse_manifest` for text and
:func:`manifest_from_dict` for an already-parsed mapping. With a ``catalog`` they also
check node types, params and the graph, so that *all* problems are reported in one
:class:`~remotemedia.errors.ManifestError`. Params that a node type does not declare
are ignored, as the original runtime ignored them; :func:`check_manifest` lists them as
:class:`ParamWarning` s, and ``strict_params=True`` makes them problems instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from remotemedia.errors import ManifestError, Problem
from remotemedia.manifest.load import StructuredManifest, parse_text, structure_manifest
from remotemedia.manifest.schema import (
    Capabilities,
    Connection,
    CpuRequirement,
    Execution,
    GpuRequirement,
    Manifest,
    Metadata,
    NodeSpec,
    PythonEnv,
)
from remotemedia.manifest.validate import (
    CheckedManifest,
    NodeCatalog,
    ParamWarning,
    check_manifest,
)

__all__ = [
    "Capabilities",
    "CheckedManifest",
    "Connection",
    "CpuRequirement",
    "Execution",
    "GpuRequirement",
    "Manifest",
    "Metadata",
    "NodeCatalog",
    "NodeSpec",
    "ParamWarning",
    "PythonEnv",
    "check_manifest",
    "checked_manifest_from_dict",
    "load_manifest",
    "manifest_from_dict",
    "parse_manifest",
    "validate_manifest",
]


def load_manifest(
    path: str | os.PathLike[str],
    *,
    catalog: NodeCatalog | None = None,
    strict_params: bool = False,
) -> Manifest:
    """Load a manifest from a YAML or JSON file.

    Args:
        path: The file to read.
        catalog: If given, also check node types, params and the graph against it.
        strict_params: With a catalog, refuse params a node type does not declare
            (by default they are ignored).

    Returns:
        The manifest.

    Raises:
        ManifestError: The file cannot be read or the manifest has problems; every
            problem is listed with its path.
    """
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        problem = Problem("$", f"cannot read the file: {reason}.")
        raise ManifestError([problem], source=source) from exc
    return parse_manifest(text, catalog=catalog, source=source, strict_params=strict_params)


def parse_manifest(
    text: str,
    *,
    catalog: NodeCatalog | None = None,
    source: str = "<string>",
    strict_params: bool = False,
) -> Manifest:
    """Parse a manifest from YAML or JSON text.

    Args:
        text: The manifest's text.
        catalog: If given, also check node types, params and the graph against it.
        source: A name for the text in error messages.
        strict_params: With a catalog, refuse params a node type does not declare
            (by default they are ignored).

    Returns:
        The manifest.

    Raises:
        ManifestError: Every problem found, with its path.
    """
    document, problems = parse_text(text, source=source)
    if problems:
        raise ManifestError(problems, source=source)
    return manifest_from_dict(document, catalog=catalog, source=source, strict_params=strict_params)


def manifest_from_dict(
    document: Mapping[str, Any] | Any,
    *,
    catalog: NodeCatalog | None = None,
    source: str | None = None,
    strict_params: bool = False,
) -> Manifest:
    """Build a manifest from a parsed mapping (as from ``json.load``).

    Args:
        document: The manifest as plain data.
        catalog: If given, also check node types, params and the graph against it.
        source: A name for the document in error messages.
        strict_params: With a catalog, refuse params a node type does not declare
            (by default they are ignored).

    Returns:
        The manifest.

    Raises:
        ManifestError: Every problem found, with its path.
    """
    return _finish(structure_manifest(document), catalog, source, strict_params)[0]


def checked_manifest_from_dict(
    document: Mapping[str, Any] | Any,
    catalog: NodeCatalog,
    *,
    source: str | None = None,
    strict_params: bool = False,
) -> tuple[Manifest, CheckedManifest]:
    """:func:`manifest_from_dict` with a catalog, also returning the check's outcome.

    For a caller that compiles the manifest next (:func:`~remotemedia.session.compile_graph`
    takes the outcome), so that a manifest is checked once.

    Raises:
        ManifestError: Every problem found, with its path.
    """
    manifest, checked = _finish(structure_manifest(document), catalog, source, strict_params)
    assert checked is not None  # (a catalog was given)
    return manifest, checked


def validate_manifest(
    manifest: Manifest, catalog: NodeCatalog, *, strict_params: bool = False
) -> CheckedManifest:
    """Check a manifest against a catalog and raise if it has any problem.

    Args:
        manifest: The manifest to check.
        catalog: The node types that may be used.
        strict_params: Refuse params a node type does not declare (by default they
            are ignored and listed in the outcome's ``warnings``).

    Returns:
        The check's outcome, including each node's structured params and warnings.

    Raises:
        ManifestError: Every problem found, with its path.
    """
    checked = check_manifest(manifest, catalog, strict_params=strict_params)
    if checked.problems:
        raise ManifestError(checked.problems)
    return checked


def _finish(
    structured: StructuredManifest,
    catalog: NodeCatalog | None,
    source: str | None,
    strict_params: bool,
) -> tuple[Manifest, CheckedManifest | None]:
    problems = list(structured.problems)
    manifest = structured.manifest
    checked = None
    if manifest is not None and catalog is not None:
        checked = check_manifest(
            manifest,
            catalog,
            unparsed_node_ids=structured.unparsed_node_ids,
            node_positions=structured.node_positions,
            connection_positions=structured.connection_positions,
            strict_params=strict_params,
        )
        # A place already reported as malformed need not be reported again as invalid
        # (a missing `nodes` key is not also "a pipeline needs at least one node").
        reported = {problem.path for problem in problems}
        problems += [p for p in checked.problems if p.path not in reported]
    if problems or manifest is None:
        raise ManifestError(_ordered(problems), source=source)
    return manifest, checked


def _ordered(problems: list[Problem]) -> list[Problem]:
    """Sort problems by where they occur in the document, keeping their relative order."""

    def key(problem: Problem) -> tuple[int, int]:
        path = problem.path
        section = next(
            (
                i
                for i, name in enumerate(("$.version", "$.metadata", "$.nodes", "$.connections"))
                if path.startswith(name)
            ),
            4,
        )
        index = 0
        if "[" in path:
            try:
                index = int(path.split("[", 1)[1].split("]", 1)[0])
            except ValueError:
                index = 0
        return section, index

    return sorted(problems, key=key)
