from remotemedia.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RuntimeHint(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUNTIME_HINT_UNSPECIFIED: _ClassVar[RuntimeHint]
    RUNTIME_HINT_RUSTPYTHON: _ClassVar[RuntimeHint]
    RUNTIME_HINT_CPYTHON: _ClassVar[RuntimeHint]
    RUNTIME_HINT_CPYTHON_WASM: _ClassVar[RuntimeHint]
    RUNTIME_HINT_AUTO: _ClassVar[RuntimeHint]
RUNTIME_HINT_UNSPECIFIED: RuntimeHint
RUNTIME_HINT_RUSTPYTHON: RuntimeHint
RUNTIME_HINT_CPYTHON: RuntimeHint
RUNTIME_HINT_CPYTHON_WASM: RuntimeHint
RUNTIME_HINT_AUTO: RuntimeHint

class ExecuteRequest(_message.Message):
    __slots__ = ("manifest", "data_inputs", "resource_limits", "client_version")
    class DataInputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.DataBuffer
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.DataBuffer, _Mapping]] = ...) -> None: ...
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    DATA_INPUTS_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_LIMITS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    manifest: PipelineManifest
    data_inputs: _containers.MessageMap[str, _common_pb2.DataBuffer]
    resource_limits: _common_pb2.ResourceLimits
    client_version: str
    def __init__(self, manifest: _Optional[_Union[PipelineManifest, _Mapping]] = ..., data_inputs: _Optional[_Mapping[str, _common_pb2.DataBuffer]] = ..., resource_limits: _Optional[_Union[_common_pb2.ResourceLimits, _Mapping]] = ..., client_version: _Optional[str] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("result", "error")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    result: ExecutionResult
    error: _common_pb2.ErrorResponse
    def __init__(self, result: _Optional[_Union[ExecutionResult, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ErrorResponse, _Mapping]] = ...) -> None: ...

class PipelineManifest(_message.Message):
    __slots__ = ("version", "metadata", "nodes", "connections")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    version: str
    metadata: ManifestMetadata
    nodes: _containers.RepeatedCompositeFieldContainer[NodeManifest]
    connections: _containers.RepeatedCompositeFieldContainer[Connection]
    def __init__(self, version: _Optional[str] = ..., metadata: _Optional[_Union[ManifestMetadata, _Mapping]] = ..., nodes: _Optional[_Iterable[_Union[NodeManifest, _Mapping]]] = ..., connections: _Optional[_Iterable[_Union[Connection, _Mapping]]] = ...) -> None: ...

class ManifestMetadata(_message.Message):
    __slots__ = ("name", "description", "created_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    created_at: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., created_at: _Optional[str] = ...) -> None: ...

class NodeManifest(_message.Message):
    __slots__ = ("id", "node_type", "params", "is_streaming", "capabilities", "host", "runtime_hint", "input_types", "output_types")
    ID_FIELD_NUMBER: _ClassVar[int]
    NODE_TYPE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    IS_STREAMING_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_HINT_FIELD_NUMBER: _ClassVar[int]
    INPUT_TYPES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TYPES_FIELD_NUMBER: _ClassVar[int]
    id: str
    node_type: str
    params: str
    is_streaming: bool
    capabilities: CapabilityRequirements
    host: str
    runtime_hint: RuntimeHint
    input_types: _containers.RepeatedScalarFieldContainer[_common_pb2.DataTypeHint]
    output_types: _containers.RepeatedScalarFieldContainer[_common_pb2.DataTypeHint]
    def __init__(self, id: _Optional[str] = ..., node_type: _Optional[str] = ..., params: _Optional[str] = ..., is_streaming: _Optional[bool] = ..., capabilities: _Optional[_Union[CapabilityRequirements, _Mapping]] = ..., host: _Optional[str] = ..., runtime_hint: _Optional[_Union[RuntimeHint, str]] = ..., input_types: _Optional[_Iterable[_Union[_common_pb2.DataTypeHint, str]]] = ..., output_types: _Optional[_Iterable[_Union[_common_pb2.DataTypeHint, str]]] = ...) -> None: ...

class Connection(_message.Message):
    __slots__ = ("to",)
    FROM_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    to: str
    def __init__(self, to: _Optional[str] = ..., **kwargs) -> None: ...

class CapabilityRequirements(_message.Message):
    __slots__ = ("gpu", "cpu", "memory_gb")
    GPU_FIELD_NUMBER: _ClassVar[int]
    CPU_FIELD_NUMBER: _ClassVar[int]
    MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    gpu: GpuRequirement
    cpu: CpuRequirement
    memory_gb: float
    def __init__(self, gpu: _Optional[_Union[GpuRequirement, _Mapping]] = ..., cpu: _Optional[_Union[CpuRequirement, _Mapping]] = ..., memory_gb: _Optional[float] = ...) -> None: ...

class GpuRequirement(_message.Message):
    __slots__ = ("type", "min_memory_gb", "required")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MIN_MEMORY_GB_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    type: str
    min_memory_gb: float
    required: bool
    def __init__(self, type: _Optional[str] = ..., min_memory_gb: _Optional[float] = ..., required: _Optional[bool] = ...) -> None: ...

class CpuRequirement(_message.Message):
    __slots__ = ("cores", "arch")
    CORES_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    cores: int
    arch: str
    def __init__(self, cores: _Optional[int] = ..., arch: _Optional[str] = ...) -> None: ...

class ExecutionResult(_message.Message):
    __slots__ = ("data_outputs", "metrics", "node_results", "status")
    class DataOutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.DataBuffer
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.DataBuffer, _Mapping]] = ...) -> None: ...
    DATA_OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    NODE_RESULTS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    data_outputs: _containers.MessageMap[str, _common_pb2.DataBuffer]
    metrics: _common_pb2.ExecutionMetrics
    node_results: _containers.RepeatedCompositeFieldContainer[_common_pb2.NodeResult]
    status: _common_pb2.ExecutionStatus
    def __init__(self, data_outputs: _Optional[_Mapping[str, _common_pb2.DataBuffer]] = ..., metrics: _Optional[_Union[_common_pb2.ExecutionMetrics, _Mapping]] = ..., node_results: _Optional[_Iterable[_Union[_common_pb2.NodeResult, _Mapping]]] = ..., status: _Optional[_Union[_common_pb2.ExecutionStatus, str]] = ...) -> None: ...

class VersionRequest(_message.Message):
    __slots__ = ("client_version",)
    CLIENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    client_version: str
    def __init__(self, client_version: _Optional[str] = ...) -> None: ...

class VersionResponse(_message.Message):
    __slots__ = ("version_info", "compatible", "compatibility_message")
    VERSION_INFO_FIELD_NUMBER: _ClassVar[int]
    COMPATIBLE_FIELD_NUMBER: _ClassVar[int]
    COMPATIBILITY_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    version_info: _common_pb2.VersionInfo
    compatible: bool
    compatibility_message: str
    def __init__(self, version_info: _Optional[_Union[_common_pb2.VersionInfo, _Mapping]] = ..., compatible: _Optional[bool] = ..., compatibility_message: _Optional[str] = ...) -> None: ...
