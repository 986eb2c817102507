"""The curated public API: a change to it must be deliberate (update the snapshot)."""

from __future__ import annotations

import importlib
import inspect

import remotemedia

PUBLIC_API = [
    "Audio",
    "AuthenticationError",
    "Binary",
    "Control",
    "Image",
    "InvalidMediaError",
    "InvalidRequestError",
    "Json",
    "Manifest",
    "ManifestError",
    "ModelNotFoundError",
    "NoParams",
    "Node",
    "NodeError",
    "NodeRegistry",
    "NodeStats",
    "PipelineClosedError",
    "Problem",
    "RemoteMediaError",
    "ResourceLimitError",
    "Result",
    "RuntimeData",
    "ServerError",
    "Session",
    "Text",
    "UnknownNodeError",
    "VersionMismatchError",
    "__version__",
    "builtin_registry",
    "compile_pipeline",
    "load_manifest",
    "manifest_from_dict",
    "open_pipeline",
    "param",
    "parse_manifest",
    "read_wav",
    "run",
    "run_pipeline",
    "write_wav",
]


def test_public_api_matches_the_snapshot() -> None:
    assert sorted(remotemedia.__all__) == PUBLIC_API


def test_public_api_names_all_resolve_and_are_documented() -> None:
    for name in remotemedia.__all__:
        value = getattr(remotemedia, name)
        if name != "__version__" and name != "RuntimeData":
            assert (value.__doc__ or "").strip(), f"{name} has no docstring"


def test_every_error_derives_from_remotemedia_error() -> None:
    errors = [getattr(remotemedia, n) for n in remotemedia.__all__ if n.endswith("Error")]
    assert errors
    assert all(issubclass(error, remotemedia.RemoteMediaError) for error in errors)


def test_version_matches_the_installed_distribution() -> None:
    from importlib.metadata import version

    assert remotemedia.__version__ == version("remotemedia")


FAULT_KIT_API = {
    "remotemedia.faults": [
        "ACTIONS_AT",
        "Action",
        "ActionKind",
        "Fault",
        "FaultCounter",
        "FaultPlan",
        "FaultPlanError",
        "NODE_SITES",
        "Site",
    ],
    "remotemedia.testing.faults": [
        "Action",
        "ActionKind",
        "BYSTANDER_PREFIX",
        "Fault",
        "FaultPlan",
        "FaultSwitch",
        "NO_FAULTS",
        "Resources",
        "SCENARIO_LIMITS",
        "SCENARIO_WORKERS",
        "Scenario",
        "Site",
        "Trace",
        "TraceEvent",
        "Transport",
        "run_scenario",
        "seeded_scheduling",
        "stream_scenario",
        "violations",
        "worker_pids",
    ],
}


def test_fault_kit_api_matches_the_snapshot() -> None:
    for module_name, names in FAULT_KIT_API.items():
        module = importlib.import_module(module_name)
        assert sorted(module.__all__) == names, module_name
        for name in names:
            value = getattr(module, name)
            if isinstance(value, type) or inspect.isfunction(value):
                assert (value.__doc__ or "").strip(), f"{module_name}.{name} has no docstring"
