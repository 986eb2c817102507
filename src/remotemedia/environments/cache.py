"""The folder of built environments, and building them from Trio.

:class:`Environments` answers "which interpreter runs this node's worker": the
server's own for a node without an environment, else the ``bin/python`` of a venv in
the cache folder (``--env-dir``), built on first use. A build runs the
:mod:`~remotemedia.environments.builder` program, whose ``flock`` makes concurrent
builders (other sessions, other server processes, ``remotemedia envs build``) wait
for one build. Within a server, builds belong to the server (:meth:`Environments.serve`),
not to the session that asked first: a session that gives up (its init timeout)
leaves the build going for the next one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from remotemedia.environments.interpreters import find_interpreter
from remotemedia.environments.spec import (
    INSTALLERS,
    MARKER,
    Environment,
    environment_key,
    failed_requirement,
)
from remotemedia.errors import EnvironmentBuildError, NodeEnvironmentError

__all__ = [
    "WORKER_PACKAGES",
    "Environments",
    "Installed",
    "Planned",
    "default_env_dir",
    "worker_requirements",
]

logger = logging.getLogger(__name__)

ENVIRONMENT_NAME = re.compile(r"py\d+\.\d+-[0-9a-f]{12}")
"""The folder names :func:`~remotemedia.environments.spec.environment_key` gives."""

Progress = Callable[[str], Awaitable[None]]

WORKER_PACKAGES = ("trio", "attrs", "cattrs", "numpy", "soxr", "PyYAML", "packaging", "iceoryx2")
"""What a worker process imports of remotemedia's dependencies. The server-only ones
(gRPC, HTTP/2, onnxruntime, ...) stay out of model environments."""


def default_env_dir() -> Path:
    """``$XDG_CACHE_HOME/remotemedia/envs`` (``~/.cache/remotemedia/envs``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "remotemedia" / "envs"


def worker_requirements() -> tuple[str, ...]:
    """Remotemedia's own requirements on :data:`WORKER_PACKAGES`, as it declares them.

    iceoryx2 is pinned there: server and worker must share one shared-memory format.
    """
    wanted = {name.lower() for name in WORKER_PACKAGES}
    declared = importlib.metadata.requires("remotemedia") or []
    found = []
    for requirement in declared:
        if ";" in requirement:
            continue  # an extra's
        name = requirement.split(">", 1)[0].split("=", 1)[0].split("<", 1)[0].strip()
        if name.lower() in wanted:
            found.append(requirement.replace(" ", ""))
    return tuple(found)


def _package_dir() -> Path:
    return Path(__file__).resolve().parents[1]


def _version() -> str:
    return importlib.metadata.version("remotemedia")


@attrs.frozen
class Planned:
    """An environment resolved on this machine: which interpreter, which folder.

    Attributes:
        environment: What was asked for.
        key: The folder's name (see :func:`~remotemedia.environments.spec.environment_key`).
        folder: Where it is (or will be).
        python: The base interpreter the venv is made from.
        version: Its version.
    """

    environment: Environment
    key: str
    folder: Path
    python: str
    version: str

    @property
    def executable(self) -> Path:
        """The environment's own ``python``."""
        return self.folder / "bin" / "python"

    @property
    def log_path(self) -> Path:
        """The build log."""
        return self.folder.parent / f"{self.key}.log"

    def built(self) -> bool:
        """Whether the environment is finished (its marker exists)."""
        return (self.folder / MARKER).exists()


@attrs.frozen
class Installed:
    """A folder of the cache, for ``remotemedia envs list``.

    Attributes:
        key: Its name.
        folder: Where it is.
        complete: Whether its build finished.
        info: The marker's contents (python, requirements, build time).
        size_bytes: Disk used.
        last_used: When a worker last started from it (seconds since the epoch).
    """

    key: str
    folder: Path
    complete: bool
    info: dict[str, Any]
    size_bytes: int
    last_used: float


@attrs.define(eq=False)
class _Build:
    """One build in progress, shared by everyone waiting for it."""

    lines: list[str] = attrs.Factory(list)
    changed: trio.Event = attrs.Factory(trio.Event)
    done: trio.Event = attrs.Factory(trio.Event)
    error: NodeEnvironmentError | None = None

    def add(self, line: str) -> None:
        self.lines.append(line)
        self.changed.set()
        self.changed = trio.Event()


@attrs.define(eq=False)
class Environments:
    """The environment cache folder of a server (or of one CLI command).

    Attributes:
        root: The cache folder (``--env-dir``).
        installer: ``pip`` or ``uv``.
    """

    root: Path = attrs.field(factory=default_env_dir, converter=Path)
    installer: str = "pip"
    _builds: dict[str, _Build] = attrs.field(factory=dict, init=False)
    _nursery: trio.Nursery | None = attrs.field(default=None, init=False)
    _plans: dict[Environment, Planned] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        if self.installer not in INSTALLERS:
            raise NodeEnvironmentError(
                f"--env-installer must be one of {', '.join(INSTALLERS)}; got {self.installer!r}."
            )

    def plan(self, environment: Environment) -> Planned:
        """Resolve an environment on this machine (finds its interpreter: may run Pythons).

        Raises:
            NodeEnvironmentError: No interpreter fits.
        """
        planned = self._plans.get(environment)
        if planned is None:
            interpreter = find_interpreter(environment.python)
            key = environment_key(
                environment,
                interpreter,
                installer=self.installer,
                remotemedia=_version(),
            )
            planned = Planned(
                environment, key, self.root / key, interpreter.path, interpreter.version
            )
            self._plans[environment] = planned
        return planned

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the builds from now on (until cancelled), so they outlive the sessions asking."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def ensure(self, environment: Environment, progress: Progress | None = None) -> Path:
        """The interpreter of ``environment``'s worker, building it first if need be.

        Progress lines of the build (the installer's "Collecting ...") go to
        ``progress``. Cancelling the wait leaves a server's build going.

        Raises:
            NodeEnvironmentError: No interpreter fits the environment's ``python``.
            EnvironmentBuildError: The build failed (names the requirement and the log).
        """
        planned = await trio.to_thread.run_sync(self.plan, environment)
        if planned.built():
            _touch(planned.folder / MARKER)
            return planned.executable
        build = self._builds.get(planned.key)
        if build is None:
            build = self._builds[planned.key] = _Build()
            if self._nursery is not None:
                self._nursery.start_soon(self._build, planned, build)
            else:
                await self._wait(planned, build, progress, start=True)
                return planned.executable
        await self._wait(planned, build, progress, start=False)
        return planned.executable

    async def _wait(
        self, planned: Planned, build: _Build, progress: Progress | None, *, start: bool
    ) -> None:
        if progress is not None:
            await progress(
                f"Building its Python environment ({planned.environment.describe()}); "
                f"log: {planned.log_path}"
            )
        async with trio.open_nursery() as nursery:
            if start:
                nursery.start_soon(self._build, planned, build)
            seen = len(build.lines)
            while True:
                changed = build.changed
                if not build.done.is_set():
                    await changed.wait()
                if progress is not None:
                    for line in build.lines[seen:]:
                        await progress(f"Environment: {line}")
                seen = len(build.lines)
                if build.done.is_set():
                    break
        if build.error is not None:
            raise build.error

    async def _build(self, planned: Planned, build: _Build) -> None:
        """Run the builder program, relaying its lines; record the outcome."""
        plan = {
            "root": str(self.root),
            "key": planned.key,
            "python": planned.python,
            "version": planned.version,
            "requirements": list(planned.environment.requirements),
            "worker_requirements": list(worker_requirements()),
            "installer": self.installer,
            "remotemedia": _version(),
        }
        command = [sys.executable, "-m", "remotemedia.environments.builder", json.dumps(plan)]
        logger.info("Building environment %s (%s)", planned.key, planned.environment.describe())
        try:
            async with trio.open_nursery() as nursery:
                process: trio.Process = await nursery.start(
                    functools.partial(
                        trio.run_process,
                        command,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        check=False,
                    )
                )
                assert process.stdout is not None
                pending = b""
                async for chunk in process.stdout:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        build.add(line.decode(errors="replace").rstrip())
            status = process.returncode
            if status != 0 or not planned.built():
                build.error = self._failure(planned, status)
        finally:
            del self._builds[planned.key]
            build.done.set()
            build.changed.set()

    def _failure(self, planned: Planned, status: int | None) -> EnvironmentBuildError:
        try:
            log = planned.log_path.read_text(errors="replace")
        except OSError:
            log = ""
        last_build = log[log.rfind("== ") :]
        requirements = planned.environment.requirements
        requirement = failed_requirement(last_build, requirements)
        if requirement:
            what = f"the requirement {requirement!r} could not be installed"
        else:
            packages = ", ".join(requirements) or "its packages"
            what = f"installing {packages} failed (exit status {status})"
        return EnvironmentBuildError(
            f"Building the Python environment {planned.key} failed: {what}. The build log "
            f"is {planned.log_path}.",
            requirement=requirement,
            log_path=str(planned.log_path),
        )

    def installed(self) -> list[Installed]:
        """Every folder of the cache, finished or not, newest first."""
        found: list[Installed] = []
        if not self.root.is_dir():
            return found
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or not ENVIRONMENT_NAME.fullmatch(folder.name):
                continue  # the links folder, or something of the user's
            marker = folder / MARKER
            info: dict[str, Any] = {}
            if marker.exists():
                try:
                    info = json.loads(marker.read_text())
                except (OSError, ValueError):
                    info = {}
            found.append(
                Installed(
                    key=folder.name,
                    folder=folder,
                    complete=bool(info),
                    info=info,
                    size_bytes=_size(folder),
                    last_used=marker.stat().st_mtime if marker.exists() else 0.0,
                )
            )
        return sorted(found, key=lambda item: item.last_used, reverse=True)

    def remove(self, key: str) -> None:
        """Delete an environment (its folder, lock and log).

        Raises:
            NodeEnvironmentError: No such environment, or another process is building it.
        """
        folder = self.root / key
        if not ENVIRONMENT_NAME.fullmatch(key) or not folder.is_dir():
            raise NodeEnvironmentError(
                f"No environment {key!r} in {self.root}; `remotemedia envs list` shows them."
            )
        shutil.rmtree(folder)
        for suffix in (".lock", ".log"):
            (self.root / f"{key}{suffix}").unlink(missing_ok=True)

    def worker_path(self) -> str:
        """``PYTHONPATH`` for a worker in an environment: remotemedia and nothing else.

        A folder of the cache holds a link to this server's package, so the worker
        runs the server's own code (whatever its version) without the server's other
        packages, which are built for another Python.
        """
        package = _package_dir()
        links = self.root / "links" / hashlib.sha256(str(package).encode()).hexdigest()[:12]
        target = links / "remotemedia"
        if not target.is_symlink() or os.readlink(target) != str(package):
            links.mkdir(parents=True, exist_ok=True)
            temporary = links / f"remotemedia.{os.getpid()}.tmp"
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(package, target_is_directory=True)
            os.replace(temporary, target)
        return str(links)


def _touch(path: Path) -> None:
    """Mark an environment used now (``envs list`` shows it; cleanup keeps it)."""
    with contextlib.suppress(OSError):  # a read-only cache still works
        os.utime(path)


def _size(folder: Path) -> int:
    total = 0
    for directory, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except OSError:
                continue
    return total
