"""What a node's worker environment is: its Python and its requirements (sans-IO).

An :class:`Environment` is declared by a node type (``Node.environment``), replaced by
the server's node config, and extended by a trusted manifest (``python``,
``python_deps``). Two environments with the same interpreter, requirements, installer
and remotemedia version are the same folder on disk: :func:`environment_key` names it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence

import attrs
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from remotemedia.errors import NodeEnvironmentError

__all__ = [
    "INSTALLERS",
    "MARKER",
    "Environment",
    "Interpreter",
    "check_requirement",
    "environment_key",
    "failed_requirement",
    "node_environment",
    "python_specifier",
]

MARKER = "remotemedia-env.json"
"""The file that makes a folder a finished environment (written last by the builder)."""

INSTALLERS = ("pip", "uv")
"""How an environment's packages are installed: ``pip`` (the server's own pip, with
``--python``: pip's configuration, indexes and constraints apply) or ``uv``."""


def _requirements(value: Iterable[str]) -> tuple[str, ...]:
    cleaned = tuple(str(item).strip() for item in value)
    for item in cleaned:
        check_requirement(item)
    return cleaned


def check_requirement(text: str) -> None:
    """Check one requirement: PEP 508, or a local path; never a pip option.

    Raises:
        NodeEnvironmentError: It is not a requirement pip would install.
    """
    if not text or text.startswith("-"):
        raise NodeEnvironmentError(
            f"{text!r} is not a requirement: give one like 'transformers>=5.18' "
            "(pip options are not accepted here; put them in pip's own configuration)."
        )
    if _is_local(text):
        return  # a local folder or wheel: pip checks it
    try:
        Requirement(text)
    except InvalidRequirement as exc:
        raise NodeEnvironmentError(f"{text!r} is not a valid requirement: {exc}.") from None


def _is_local(text: str) -> bool:
    return text.startswith(("/", "./", "file:")) or " @ file:" in text


@attrs.frozen
class Environment:
    """The Python and the packages a node's worker process needs.

    Attributes:
        python: Which interpreter: a version (``"3.12"`` means any 3.12.x), a
            specifier (``">=3.12"``) or a path to a ``python`` executable; None: the
            server's own Python.
        requirements: PEP 508 requirements (``"transformers>=5.18,<6"``) or local
            paths, installed besides the worker side of remotemedia.
    """

    python: str | None = None
    requirements: tuple[str, ...] = attrs.field(default=(), converter=_requirements)

    def __attrs_post_init__(self) -> None:
        if self.python is not None:
            python_specifier(self.python)  # raises for nonsense

    def extended(self, requirements: Sequence[str], python: str | None = None) -> Environment:
        """This environment with more requirements (and another Python, if given)."""
        extra = tuple(r for r in requirements if r not in self.requirements)
        return Environment(python or self.python, self.requirements + extra)

    def describe(self) -> str:
        """A short human description: ``python 3.11, torch==2.13.0, transformers``."""
        python = f"python {self.python}" if self.python else "the server's python"
        return ", ".join([python, *self.requirements])


def node_environment(
    declared: Environment | None,
    configured: Environment | None,
    python: str | None = None,
    python_deps: Sequence[str] = (),
) -> Environment | None:
    """The environment a node's worker runs in (None: the server's own Python).

    Args:
        declared: The node type's :attr:`~remotemedia.nodes.Node.environment`.
        configured: The server's node config for the node type, which replaces it.
        python: The manifest's ``python`` for the node, which replaces the Python.
        python_deps: The manifest's ``python_deps``, added to the requirements.
    """
    base = configured or declared
    if python is None and not python_deps:
        return base
    return (base or Environment()).extended(python_deps, python)


def python_specifier(text: str) -> SpecifierSet | None:
    """The version specifier ``text`` means (None: it is a path to an interpreter).

    ``"3.12"`` is ``==3.12.*``, ``"3.12.1"`` is ``==3.12.1``, and anything starting
    with an operator is taken as written.

    Raises:
        NodeEnvironmentError: ``text`` is neither a version, a specifier nor a path.
    """
    text = text.strip()
    if "/" in text:
        return None
    try:
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return SpecifierSet(f"=={text}.*")
        if re.fullmatch(r"\d+\.\d+\.\d+", text):
            return SpecifierSet(f"=={text}")
        return SpecifierSet(text)
    except InvalidSpecifier:
        raise NodeEnvironmentError(
            f"python {text!r} is neither a version ('3.12'), a specifier ('>=3.12') nor "
            "a path to an interpreter ('/usr/bin/python3.12')."
        ) from None


@attrs.frozen
class Interpreter:
    """A Python found on this machine.

    Attributes:
        path: Its executable (resolved: symlinks followed to the real file).
        version: Its ``major.minor.micro``.
    """

    path: str
    version: str

    def satisfies(self, python: str | None) -> bool:
        """Whether this interpreter is what ``python`` (an :attr:`Environment.python`) asks."""
        if python is None:
            return True
        specifier = python_specifier(python)
        if specifier is None:
            return False  # a path: compared by the caller after resolving it
        return Version(self.version) in specifier


def environment_key(
    env: Environment, interpreter: Interpreter, *, installer: str, remotemedia: str
) -> str:
    """The folder name of an environment: ``py3.11-<12 hex digits>``.

    The hash covers everything that changes what gets installed: the interpreter (its
    path and version), the requirements (order does not matter), the installer and
    remotemedia's version (the worker side is part of the environment).
    """
    identity = json.dumps(
        {
            "python": interpreter.path,
            "version": interpreter.version,
            "requirements": sorted(env.requirements),
            "installer": installer,
            "remotemedia": remotemedia,
        },
        sort_keys=True,
    )
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    major_minor = ".".join(interpreter.version.split(".")[:2])
    return f"py{major_minor}-{digest}"


_FAILED = (
    re.compile(r"No matching distribution found for (\S+)"),
    re.compile(r"Could not find a version that satisfies the requirement (\S+)"),
    re.compile(r"Because (\S+) was not found in the package registry"),  # uv
    re.compile(r"No solution found when resolving dependencies:.*?\b(\S+) was not found", re.S),
    re.compile(r"Failed to build (\S+)"),
    re.compile(r"Failed to download `?([^`\s]+)"),
    re.compile(r"Cannot install (\S+) because these package versions have conflicting"),
)


def failed_requirement(log: str, requirements: Sequence[str]) -> str | None:
    """The requirement an installer's output says it could not satisfy, if it says so.

    Prefers a requirement as the user wrote it (``torch==99``) over the installer's
    spelling of it, when the installer names the same project.
    """
    for pattern in _FAILED:
        match = pattern.search(log)
        if match is None:
            continue
        named = match.group(1).strip("`'\",")
        project = re.split(r"[<>=!~;\[ ]", named, maxsplit=1)[0].lower().replace("_", "-")
        for requirement in requirements:
            written = re.split(r"[<>=!~;\[ @]", requirement, maxsplit=1)[0]
            if written.lower().replace("_", "-") == project:
                return requirement
        return named
    return None
