"""Shared fixtures."""

from __future__ import annotations

import pytest

from remotemedia.nodes import NodeRegistry, builtin_registry


@pytest.fixture
def registry() -> NodeRegistry:
    """A fresh registry of the built-in node types."""
    return builtin_registry()
