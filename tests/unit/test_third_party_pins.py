"""The third-party internals we reach into: the versions they were written for, pinned.

Each ``*_internals`` module under ``remotemedia.transport`` lists the versions of its
library whose source it was checked against (``WRITTEN_FOR``); these tests fail on
any other installed version, and when ``pyproject.toml``'s pin lets in a version the
module was not written for.
"""

from __future__ import annotations

import importlib.metadata
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from remotemedia.transport import (
    aioice_internals,
    aiortc_internals,
    grpclib_internals,
    h2_internals,
    hypercorn_internals,
)

ADAPTERS = [
    grpclib_internals,
    h2_internals,
    hypercorn_internals,
    aioice_internals,
    aiortc_internals,
]
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _upgrade_advice(adapter: ModuleType, version: str) -> str:
    name = adapter.DISTRIBUTION
    return (
        f"{adapter.__name__} reaches into {name}'s internals and was written for {name} "
        f"{', '.join(adapter.WRITTEN_FOR)}. Before using {name} {version}, re-check each "
        f"numbered item of {adapter.__name__}'s docstring against {name} {version}'s source, "
        f"run tests/e2e, then add {version} to its WRITTEN_FOR and to the {name} pin in "
        f"pyproject.toml."
    )


def _pin(name: str) -> Requirement:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    lines = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        lines += extra  # aioice is the webrtc extra's
    pins = [Requirement(line) for line in lines if Requirement(line).name == name]
    assert len(pins) == 1, f"pyproject.toml should list {name} once among its dependencies."
    return pins[0]


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda adapter: adapter.DISTRIBUTION)
def test_internals_written_for_installed_version(adapter: ModuleType) -> None:
    installed = importlib.metadata.version(adapter.DISTRIBUTION)
    assert installed in adapter.WRITTEN_FOR, (
        f"{adapter.DISTRIBUTION} {installed} is installed. " + _upgrade_advice(adapter, installed)
    )


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda adapter: adapter.DISTRIBUTION)
def test_internals_pyproject_pin_admits_only_written_for(adapter: ModuleType) -> None:
    specifier = _pin(adapter.DISTRIBUTION).specifier
    for version in adapter.WRITTEN_FOR:
        assert specifier.contains(version), (
            f"pyproject.toml's pin {adapter.DISTRIBUTION}{specifier} refuses {version}, which "
            f"{adapter.__name__} was written for: widen the pin or drop it from WRITTEN_FOR."
        )
    versions = sorted(Version(version) for version in adapter.WRITTEN_FOR)
    newest, oldest = versions[-1], versions[0]
    outside = [Version(f"{newest.major}.{newest.minor}.{newest.micro + 1}")]
    if oldest.micro:
        outside.append(Version(f"{oldest.major}.{oldest.minor}.{oldest.micro - 1}"))
    for version in outside:
        assert not specifier.contains(version), (
            f"pyproject.toml's pin {adapter.DISTRIBUTION}{specifier} lets in {version}. "
            + _upgrade_advice(adapter, str(version))
        )
