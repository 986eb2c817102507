"""A node that needs a package the server does not have runs in an environment of its own.

Real builds (pip from the package index, into a folder of the test), a real server
on loopback, real worker processes started with the environment's interpreter, under
another Python than the server's.
"""

from __future__ import annotations

import importlib.util
import json
import platform
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from remotemedia.cli.envs import list_environments, prepare_environments
from remotemedia.config import ConfigError, NodeDefaults, ServerConfig
from remotemedia.environments import Environment
from remotemedia.environments.cache import Environments
from remotemedia.environments.interpreters import pythons
from remotemedia.nodes import NodeRegistry, builtin_registry
from remotemedia.nodes.passthrough import PassThrough
from remotemedia.v1 import common_pb2 as pb
from tests.e2e.conftest import (
    ServerFactory,
    assert_serves,
    chunk,
    expect_stream_error,
    init,
    is_status,
    kind,
    manifest,
    raw_stream,
    start_server,
    status_text,
    text_buffer,
)

__all__ = ["start_server"]  # the e2e suite's server fixture, used here

pytestmark = pytest.mark.slow

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "slug_node"
BUILD_TIMEOUT = 300.0  # a first build downloads numpy, iceoryx2, ... (pip's cache helps)


@pytest.fixture
def transport() -> str:
    """One transport is enough here: the environment is the worker's business."""
    return "native"


def other_python() -> str:
    """The ``major.minor`` of a Python on this machine other than the server's."""
    own = f"{sys.version_info[0]}.{sys.version_info[1]}"
    for interpreter in pythons():
        version = ".".join(interpreter.version.split(".")[:2])
        if version != own:
            return version
    pytest.skip(f"needs a second Python besides {own} on this machine (pyenv, uv, the OS's)")


@pytest.fixture
def slug_package(tmp_path: Path) -> Iterator[Path]:
    """The node's package, copied (pip builds it in place), importable by the server."""
    copy = tmp_path / "slug_node"
    shutil.copytree(FIXTURE, copy)
    sys.path.insert(0, str(copy))
    try:
        yield copy
    finally:
        sys.path.remove(str(copy))
        sys.modules.pop("slug_node", None)


def registry_with_slug() -> NodeRegistry:
    from slug_node import SlugNode  # type: ignore[import-not-found]

    registry = builtin_registry()
    registry.register(SlugNode)
    return registry


async def slug_session(address: object, text: str) -> tuple[dict[str, object], list[str]]:
    """One session of SlugNode: its result, and the ``_status`` lines before ready."""
    statuses = []
    async with raw_stream(address) as stream:  # type: ignore[arg-type]
        await stream.send(init(manifest([("slug", "SlugNode")])))
        while True:
            response = await stream.recv()
            assert response is not None
            if kind(response) == "ready":
                break
            assert is_status(response), response
            statuses.append(status_text(response))
        await stream.send(chunk(text_buffer(text), 0, node_id="slug"))
        response = await stream.recv()
        assert response is not None
        assert kind(response) == "result", response
        value = json.loads(response.result.data_outputs["slug"].json.json_payload)
        await stream.finish()
    return value, statuses


async def test_a_node_runs_in_its_own_environment_under_another_python(
    start_server: ServerFactory, slug_package: Path, tmp_path: Path
) -> None:
    version = other_python()
    env_dir = tmp_path / "envs"
    node_config = {
        "SlugNode": NodeDefaults(python=version, requirements=(str(slug_package),)),
    }
    with trio.fail_after(BUILD_TIMEOUT):
        address = await start_server(
            registry=registry_with_slug(), env_dir=str(env_dir), node_config=node_config
        )
        first, statuses = await slug_session(address, "Hello, Wörld & friends!")
        second, statuses_again = await slug_session(address, "Again")

    assert first["slug"] == "hello-world-friends"
    assert first["python"].rsplit(".", 1)[0] == version  # type: ignore[union-attr]
    assert first["python"] != platform.python_version()
    assert str(first["prefix"]).startswith(str(env_dir))
    assert first["has_grpclib"] is False  # the server's packages stay out
    assert importlib.util.find_spec("slugify") is None  # and the server never had it
    assert "slugify" not in sys.modules

    # The first session waited for the build, with progress; the second reused it.
    assert any("Building its Python environment" in s for s in statuses), statuses
    assert any("Environment: Collecting python-slugify" in s for s in statuses), statuses
    assert not any("Environment" in s for s in statuses_again), statuses_again
    assert second["slug"] == "again"
    [folder] = [p for p in env_dir.iterdir() if p.is_dir() and p.name.startswith("py")]
    log = (env_dir / f"{folder.name}.log").read_text()
    assert log.count("== ") == 1  # built once


async def test_a_failed_build_is_a_typed_error_naming_the_requirement_and_the_log(
    start_server: ServerFactory, slug_package: Path, tmp_path: Path
) -> None:
    missing = "remotemedia-no-such-package-anywhere==0.0.1"
    node_config = {"SlugNode": NodeDefaults(requirements=(missing,))}
    with trio.fail_after(BUILD_TIMEOUT):
        address = await start_server(
            registry=registry_with_slug(), env_dir=str(tmp_path / "envs"), node_config=node_config
        )
        error = await expect_stream_error(
            address,
            [init(manifest([("slug", "SlugNode")]))],
            pb.ERROR_TYPE_NODE_EXECUTION,
            "slug",
            f"the requirement '{missing}' could not be installed",
            str(tmp_path / "envs"),
            ".log",
        )
        await assert_serves(address)
    log_path = error.message.split("The build log is ", 1)[1].rstrip(".")
    assert "No matching distribution" in await trio.Path(log_path).read_text()


async def test_builds_of_one_environment_wait_for_each_other(tmp_path: Path) -> None:
    """Two caches (two server processes, say) on one folder build it once."""
    environment = Environment(requirements=("python-slugify==8.0.4",))
    caches = [Environments(tmp_path), Environments(tmp_path)]
    pythons_found: list[Path] = []
    with trio.fail_after(BUILD_TIMEOUT):
        async with trio.open_nursery() as nursery:
            for cache in caches:

                async def build(cache: Environments = cache) -> None:
                    pythons_found.append(await cache.ensure(environment))

                nursery.start_soon(build)
    assert pythons_found[0] == pythons_found[1]
    planned = caches[0].plan(environment)
    assert planned.built()
    assert planned.log_path.read_text().count("== ") == 1


async def test_a_session_that_times_out_waiting_for_a_build_leaves_it_going_for_the_next(
    start_server: ServerFactory, slug_package: Path, tmp_path: Path
) -> None:
    env_dir = tmp_path / "envs"
    node_config = {"SlugNode": NodeDefaults(requirements=(str(slug_package),))}
    with trio.fail_after(BUILD_TIMEOUT):
        address = await start_server(
            registry=registry_with_slug(),
            env_dir=str(env_dir),
            node_config=node_config,
            init_timeout=1.0,
        )
        await expect_stream_error(
            address,
            [init(manifest([("slug", "SlugNode")]))],
            pb.ERROR_TYPE_NODE_EXECUTION,
            "did not finish initialising within 1 s",
            "slug still wait for their Python environment to be built",
            "remotemedia envs build",
        )
        # The build went on without the session: a later one finds it ready.
        # (Polled: the build is another process, and only its marker file tells.)
        while not any(env_dir.glob("py*/remotemedia-env.json")):  # noqa: ASYNC110
            await trio.sleep(0.5)
        value, statuses = await slug_session(address, "Built meanwhile")
    assert value["slug"] == "built-meanwhile"
    assert not any("Environment" in s for s in statuses)
    [log] = env_dir.glob("py*.log")
    assert log.read_text().count("== ") == 1


async def test_pips_own_configuration_applies_to_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A constraint in pip's configuration (here PIP_CONSTRAINT) holds in environments too."""
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("python-slugify==8.0.1\n")
    monkeypatch.setenv("PIP_CONSTRAINT", str(constraints))
    cache = Environments(tmp_path / "envs")
    with trio.fail_after(BUILD_TIMEOUT):
        python = await cache.ensure(Environment(requirements=("python-slugify>=8",)))
        result = await trio.run_process(
            [
                str(python),
                "-c",
                "import importlib.metadata as m; print(m.version('python-slugify'))",
            ],
            capture_stdout=True,
        )
    assert result.stdout.decode().strip() == "8.0.1"


async def test_environments_are_prepared_ahead_with_progress_and_listed(
    slug_package: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What `serve --prepare-envs` and `remotemedia envs build` run, then `envs list`."""
    config = ServerConfig(
        env_dir=str(tmp_path / "envs"),
        node_config={"SlugNode": NodeDefaults(requirements=(str(slug_package),))},
    )
    from slug_node import SlugNode

    registry = NodeRegistry([PassThrough, SlugNode])  # "all" of these: SlugNode's alone
    with trio.fail_after(BUILD_TIMEOUT):
        await prepare_environments(config, ["all"], registry)
    progress = capsys.readouterr().err
    assert "[SlugNode] Building its Python environment" in progress
    assert "[SlugNode] Environment: Collecting python-slugify" in progress
    assert re.search(r"\[SlugNode\] ready: \S+/bin/python \(\d+ s\)", progress)
    listed = "\n".join(list_environments(Environments(tmp_path / "envs")))
    assert re.search(r"py3\.\d+-[0-9a-f]{12}  python 3\.\d+\.\d+  [\d.]+ [MG]B  last used", listed)
    assert "slug_node" in listed
    # Asked for a node type without an environment, or one that does not exist: told so.
    with pytest.raises(ConfigError, match="runs on the server's own Python"):
        await prepare_environments(config, ["PassThrough"], registry)
    with pytest.raises(ConfigError, match="no node type 'NoSuch'"):
        await prepare_environments(config, ["NoSuch"], registry)


async def test_uv_builds_an_environment_as_pip_does(tmp_path: Path) -> None:
    cache = Environments(tmp_path / "envs", installer="uv")
    with trio.fail_after(BUILD_TIMEOUT):
        python = await cache.ensure(Environment(requirements=("python-slugify==8.0.4",)))
        result = await trio.run_process(
            [str(python), "-c", "import slugify, trio, iceoryx2; print(slugify.slugify('A b'))"],
            capture_stdout=True,
        )
    assert result.stdout.decode().strip() == "a-b"
    assert (
        "uv"
        in cache.plan(Environment(requirements=("python-slugify==8.0.4",))).log_path.read_text()
    )
