"""remotemedia: a Trio runtime for real-time media pipelines.

The public API is what this module exports; everything else is internal and may
change. See README.md for a tour.
"""

from remotemedia.errors import (
    AuthenticationError,
    InvalidMediaError,
    InvalidRequestError,
    ManifestError,
    ModelNotFoundError,
    NodeError,
    PipelineClosedError,
    Problem,
    RemoteMediaError,
    ResourceLimitError,
    ServerError,
    UnknownNodeError,
    VersionMismatchError,
)
from remotemedia.manifest import Manifest, load_manifest, manifest_from_dict, parse_manifest
from remotemedia.media import Audio, Binary, Control, Image, Json, RuntimeData, Text
from remotemedia.nodes import Node, NodeRegistry, NoParams, builtin_registry
from remotemedia.params import param
from remotemedia.pipeline import compile_pipeline, open_pipeline, run, run_pipeline
from remotemedia.session import NodeStats, Result, Session
from remotemedia.wav import read_wav, write_wav

__version__ = "0.1.0"

__all__ = [
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
