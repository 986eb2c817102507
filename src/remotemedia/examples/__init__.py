"""Bundled example pipelines, runnable by name (``remotemedia run vad ...``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["example_names", "example_path"]


def example_names() -> list[str]:
    """Return the names of the bundled example pipelines."""
    folder = resources.files(__name__)
    return sorted(
        entry.name.removesuffix(".yaml")
        for entry in folder.iterdir()
        if entry.name.endswith(".yaml")
    )


def example_path(name: str) -> Path | None:
    """Return the manifest file of a bundled example, or None if there is none by that name."""
    entry = resources.files(__name__).joinpath(f"{name}.yaml")
    return Path(str(entry)) if entry.is_file() else None
