"""Per-node environments: what they are (sans-IO), the node config, and the cache folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remotemedia.config import ConfigError, NodeDefaults, node_config_from_dict
from remotemedia.environments import Environment, Interpreter, node_environment
from remotemedia.environments.cache import Environments, worker_requirements
from remotemedia.environments.spec import (
    MARKER,
    environment_key,
    failed_requirement,
    python_specifier,
)
from remotemedia.errors import ManifestError, NodeEnvironmentError
from remotemedia.manifest import manifest_from_dict
from remotemedia.nodes import builtin_registry
from remotemedia.transport.setup import node_environments

PY311 = Interpreter("/usr/bin/python3.11", "3.11.2")


@pytest.mark.parametrize(
    ("text", "version", "fits"),
    [
        ("3.11", "3.11.2", True),
        ("3.11", "3.12.1", False),
        (">=3.12", "3.13.0", True),
        (">=3.12", "3.11.7", False),
        ("3.12.1", "3.12.1", True),
        ("3.12.1", "3.12.2", False),
        ("3", "3.13.0", True),
    ],
)
def test_a_python_is_a_version_or_a_specifier(text: str, version: str, fits: bool) -> None:
    assert Interpreter("/x/python", version).satisfies(text) is fits


def test_a_python_path_is_not_a_specifier_and_nonsense_is_refused() -> None:
    assert python_specifier("/usr/bin/python3.12") is None
    with pytest.raises(NodeEnvironmentError, match="neither a version"):
        Environment(python="three point twelve")


@pytest.mark.parametrize("requirement", ["", "--index-url=http://evil", "-e .", "torch >>= 2"])
def test_requirements_are_requirements_not_pip_options(requirement: str) -> None:
    with pytest.raises(NodeEnvironmentError, match="requirement"):
        Environment(requirements=(requirement,))


def test_the_key_ignores_the_order_of_requirements_and_follows_everything_else() -> None:
    a = Environment(requirements=("torch==2.13.0", "transformers"))
    b = Environment(requirements=("transformers", "torch==2.13.0"))
    key = environment_key(a, PY311, installer="pip", remotemedia="0.1.0")
    assert key == environment_key(b, PY311, installer="pip", remotemedia="0.1.0")
    assert key.startswith("py3.11-")
    others = {
        environment_key(
            a, Interpreter("/usr/bin/python3.12", "3.12.1"), installer="pip", remotemedia="0.1.0"
        ),
        environment_key(a, PY311, installer="uv", remotemedia="0.1.0"),
        environment_key(a, PY311, installer="pip", remotemedia="0.2.0"),
        environment_key(
            Environment(requirements=("torch",)), PY311, installer="pip", remotemedia="0.1.0"
        ),
    }
    assert key not in others
    assert len(others) == 4


def test_a_node_environment_is_declared_replaced_by_the_operator_and_extended_locally() -> None:
    declared = Environment(requirements=("torch>=2.8",))
    configured = Environment(python="3.11", requirements=("torch==2.13.0",))
    assert node_environment(None, None) is None
    assert node_environment(declared, None) == declared
    assert node_environment(declared, configured) == configured
    assert node_environment(declared, None, "3.12", ["numpy"]) == Environment(
        "3.12", ("torch>=2.8", "numpy")
    )
    assert node_environment(None, None, None, ["numpy"]) == Environment(None, ("numpy",))


@pytest.mark.parametrize(
    ("log", "found"),
    [
        ("ERROR: No matching distribution found for torch==99\n", "torch==99"),
        (
            "ERROR: Could not find a version that satisfies the requirement Liquid_Audio==9 "
            "(from versions: 1.0.0)\n",
            "liquid-audio==9",
        ),
        ("  Because nosuchpkg was not found in the package registry and ...", "nosuchpkg"),
        ("something else went wrong", None),
    ],
)
def test_the_failed_requirement_is_found_in_the_installers_output(
    log: str, found: str | None
) -> None:
    assert failed_requirement(log, ["liquid-audio==9", "torch==99", "nosuchpkg"]) == found


def test_the_worker_side_needs_remotemedias_own_pins() -> None:
    requirements = worker_requirements()
    assert "iceoryx2==0.10.0" in requirements  # one shared-memory format on both sides
    names = {r.split(">")[0].split("=")[0] for r in requirements}
    assert {"trio", "numpy", "attrs", "cattrs", "packaging"} <= names
    assert not names & {"grpclib", "onnxruntime", "hypercorn"}  # server-only


def test_the_cache_lists_and_removes_only_its_environments(tmp_path: Path) -> None:
    done = tmp_path / "py3.11-0123456789ab"
    done.mkdir()
    (done / MARKER).write_text(json.dumps({"version": "3.11.2", "requirements": ["six"]}))
    (tmp_path / "py3.12-ba9876543210").mkdir()  # a build that never finished
    (tmp_path / "links").mkdir()  # the cache's own, not an environment
    (tmp_path / "py3.11-0123456789ab.log").write_text("== a build\n")
    cache = Environments(tmp_path)
    listed = {item.key: item.complete for item in cache.installed()}
    assert listed == {"py3.11-0123456789ab": True, "py3.12-ba9876543210": False}
    cache.remove("py3.11-0123456789ab")
    assert not done.exists()
    assert not (tmp_path / "py3.11-0123456789ab.log").exists()
    for bad in ("links", "../etc", "py3.11-0123456789ab"):
        with pytest.raises(NodeEnvironmentError, match="envs list"):
            cache.remove(bad)


def test_the_node_config_names_the_place_of_each_problem() -> None:
    config = node_config_from_dict(
        {"LFM2TextNode": {"python": 3.12, "params": {"model": "/m"}}}, "nodes.yaml"
    )
    assert config == {"LFM2TextNode": NodeDefaults(params={"model": "/m"}, python="3.12")}
    cases = {
        "nodes.yaml: LFM2TextNode.pyhton is not a setting": {"LFM2TextNode": {"pyhton": "3"}},
        "nodes.yaml: LFM2TextNode.params must be a mapping": {"LFM2TextNode": {"params": [1]}},
        "LFM2TextNode.requirements must be a list": {"LFM2TextNode": {"requirements": "torch"}},
        "maps node types to their settings": ["LFM2TextNode"],
    }
    for message, document in cases.items():
        with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
            node_config_from_dict(document, "nodes.yaml")


def test_the_operator_environment_completes_the_declared_one_and_is_checked() -> None:
    registry = builtin_registry()
    found = node_environments(
        {"LFM2TextNode": NodeDefaults(python="3.11"), "PassThrough": NodeDefaults(params={})},
        registry,
    )
    declared = registry.get("LFM2TextNode").environment
    assert declared is not None
    assert found == {"LFM2TextNode": Environment("3.11", declared.requirements)}
    with pytest.raises(ConfigError, match="node type 'NoSuchNode'"):
        node_environments({"NoSuchNode": NodeDefaults()}, registry)
    with pytest.raises(ConfigError, match="LFM2TextNode: '-e evil'"):
        node_environments({"LFM2TextNode": NodeDefaults(requirements=("-e evil",))}, registry)


def test_a_manifest_python_and_python_deps_are_checked_with_their_place() -> None:
    document = {
        "version": "v1",
        "nodes": [
            {"id": "a", "node_type": "PassThrough", "python": "py3", "python_deps": ["ok", "-x"]}
        ],
    }
    with pytest.raises(ManifestError) as caught:
        manifest_from_dict(document, catalog=builtin_registry())
    paths = [problem.path for problem in caught.value.problems]
    assert paths == ["$.nodes[0].python", "$.nodes[0].python_deps[1]"]
