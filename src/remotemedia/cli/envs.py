"""``remotemedia envs``: build, list and remove model nodes' Python environments.

Also what ``serve --prepare-envs`` runs before the server listens, so that the first
session of a model node does not wait for pip.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence

import trio

from remotemedia.config import ConfigError, ServerConfig
from remotemedia.environments import Environment, node_environment
from remotemedia.environments.cache import Environments, Installed
from remotemedia.nodes import NodeRegistry, default_registry
from remotemedia.service.compose import environments, node_environments

__all__ = ["build_environments", "list_environments", "prepare_environments"]


def wanted(
    config: ServerConfig, names: Sequence[str], registry: NodeRegistry
) -> dict[str, Environment]:
    """The environments of the node types ``names`` (``all``: every one that has one).

    Raises:
        ConfigError: A named node type does not exist or needs no environment.
    """
    configured = node_environments(config.node_config, registry)
    found: dict[str, Environment] = {}
    everything = "all" in names
    for cls in registry:
        if not everything and cls.node_type not in names:
            continue
        environment = node_environment(cls.environment, configured.get(cls.node_type))
        if environment is not None:
            found[cls.node_type] = environment
    missing = [name for name in names if name != "all" and name not in found]
    for name in missing:
        if name not in registry:
            raise ConfigError(f"There is no node type {name!r}; `remotemedia nodes` lists them.")
        raise ConfigError(
            f"{name} runs on the server's own Python: it has no environment to build."
        )
    return found


async def prepare_environments(
    config: ServerConfig, names: Sequence[str], registry: NodeRegistry | None = None
) -> None:
    """Build the environments of ``names`` (``all``: every one), showing progress on stderr.

    Environments shared by several node types are built once.

    Raises:
        EnvironmentBuildError: A build failed (names the requirement and the log).
    """
    registry = registry or default_registry()
    cache = environments(config)
    chosen = wanted(config, names, registry)
    for node_type, environment in chosen.items():
        started = time.monotonic()

        async def show(line: str, node_type: str = node_type) -> None:
            print(f"[{node_type}] {line}", file=sys.stderr, flush=True)

        python = await cache.ensure(environment, show)
        print(
            f"[{node_type}] ready: {python} ({time.monotonic() - started:.0f} s)",
            file=sys.stderr,
            flush=True,
        )


def build_environments(config: ServerConfig, names: Sequence[str]) -> int:
    """``remotemedia envs build``: exit status 0 once every environment is built."""
    trio.run(prepare_environments, config, names or ("all",))
    return 0


def list_environments(cache: Environments) -> Iterable[str]:
    """``remotemedia envs list``: a line per environment of the cache folder."""
    installed = cache.installed()
    if not installed:
        yield f"No environments in {cache.root}."
        return
    yield f"Environments in {cache.root}:"
    for item in installed:
        yield _line(item)


def _line(item: Installed) -> str:
    size = (
        f"{item.size_bytes / 1e9:.1f} GB"
        if item.size_bytes >= 1e8
        else (f"{item.size_bytes / 1e6:.0f} MB")
    )
    if not item.complete:
        return f"  {item.key}  UNFINISHED (a build was stopped or failed; {size})"
    info = item.info
    used = time.strftime("%Y-%m-%d %H:%M", time.localtime(item.last_used))
    requirements = ", ".join(info.get("requirements") or []) or "(the worker side only)"
    return (
        f"  {item.key}  python {info.get('version')}  {size}  last used {used}\n"
        f"      {requirements}"
    )
