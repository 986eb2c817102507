"""Node types from other packages, through the remotemedia.nodes entry-point group."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from remotemedia import Text, run
from remotemedia.nodes import default_registry

PLUGIN = '''
from remotemedia.media import Text
from remotemedia.nodes import Node


class ShoutNode(Node):
    """Upper-case every text."""

    node_type = "ShoutNode"

    def process(self, data):
        return Text(data.text.upper())


NOT_A_NODE = 42
'''


@pytest.fixture
def plugin_package(tmp_path: Path) -> Iterator[None]:
    (tmp_path / "shout_plugin.py").write_text(PLUGIN)
    info = tmp_path / "shout_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: shout-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[remotemedia.nodes]\n"
        "ShoutNode = shout_plugin:ShoutNode\n"
        "Broken = shout_plugin:NOT_A_NODE\n"
        "Missing = no_such_module:Thing\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("shout_plugin", None)


def test_entry_point_node_types_join_the_default_registry(
    plugin_package: None, caplog: pytest.LogCaptureFixture
) -> None:
    registry = default_registry()
    assert "ShoutNode" in registry
    assert "SileroVADNode" in registry
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "Node plugin Broken (shout_plugin:NOT_A_NODE) was not loaded" in messages
    assert "is not a Node subclass" in messages
    assert "Node plugin Missing (no_such_module:Thing) was not loaded" in messages


def test_plugin_node_runs_in_a_pipeline(plugin_package: None) -> None:
    manifest = {"version": "v1", "nodes": [{"id": "s", "node_type": "ShoutNode"}]}
    (result,) = run(manifest, [Text("quiet please")])
    assert result.data == Text("QUIET PLEASE")


def test_registry_register_works_as_a_decorator() -> None:
    from remotemedia.nodes import Node

    registry = default_registry()

    @registry.register
    class Whisperer(Node[object]):
        node_type = "Whisperer"

        def process(self, data: object) -> object:
            return data

    assert registry.get("Whisperer") is Whisperer
    with pytest.raises(ValueError, match="already registered"):

        @registry.register
        class Other(Node[object]):
            node_type = "Whisperer"
