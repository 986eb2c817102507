"""Inbound checks (sans-IO): every numeric and JSON field a client sends is validated.

Each error must be a validation error (InvalidMediaError, InvalidRequestError or a
ManifestError problem) that names the field's path and, for numbers, the range.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from remotemedia.config import Limits
from remotemedia.errors import InvalidMediaError, InvalidRequestError, ManifestError
from remotemedia.media import Audio
from remotemedia.nodes import default_registry
from remotemedia.service.context import COMPILED_CACHE, MIN_MEMORY_LIMIT_BYTES, ServiceContext
from remotemedia.service.convert import audio_from_wire, data_from_wire, manifest_document
from remotemedia.service.metrics import ServerMetrics
from remotemedia.service.status import error_response
from remotemedia.session.manager import SessionManager
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import execution_pb2 as epb

WHERE = "data_chunk.buffer"
DEEP = "[" * 100_000 + "]" * 100_000


def audio(**fields: object) -> pb.AudioBuffer:
    defaults: dict[str, object] = {
        "samples": np.zeros(4, dtype="<f4").tobytes(),
        "sample_rate": 16_000,
        "channels": 1,
        "format": pb.AUDIO_FORMAT_F32,
    }
    return pb.AudioBuffer(**{**defaults, **fields})  # type: ignore[arg-type]


def media_error(buffer: pb.DataBuffer) -> str:
    with pytest.raises(InvalidMediaError) as caught:
        data_from_wire(buffer, WHERE)
    assert error_response(caught.value).error_type == pb.ERROR_TYPE_VALIDATION
    return str(caught.value)


# ---------------------------------------------------------------- audio


@pytest.mark.parametrize("channels", [0, 9, 2**32 - 1])
def test_audio_channels_out_of_range_is_an_error_naming_the_field(channels: int) -> None:
    message = media_error(pb.DataBuffer(audio=audio(channels=channels)))
    assert message == (
        f"data_chunk.buffer.audio.channels is {channels}; it must be between 1 and 8 (1 for mono)."
    )


def test_deprecated_audio_chunk_channels_zero_is_an_error_naming_the_field() -> None:
    with pytest.raises(InvalidMediaError, match=r"^audio_chunk\.buffer\.channels is 0;"):
        audio_from_wire(audio(channels=0), "audio_chunk.buffer")


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_audio_channels_in_range_are_kept(channels: int) -> None:
    decoded = data_from_wire(pb.DataBuffer(audio=audio(channels=channels)), WHERE)
    assert isinstance(decoded, Audio)
    assert decoded.channels == channels


def test_audio_metadata_json_nested_too_deeply_is_an_error_naming_the_field() -> None:
    message = media_error(pb.DataBuffer(audio=audio(metadata_json=DEEP.encode())))
    assert message.startswith("data_chunk.buffer.audio.metadata_json is nested too deeply")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{", "is not valid JSON (Expecting property name enclosed in double quotes at line 1"),
        (b'{"a": "\xff"}', "is not valid UTF-8 (invalid start byte at byte 7)"),
        (b"[1]", "must be a JSON object"),
    ],
)
def test_audio_metadata_json_that_is_not_an_object_is_an_error_naming_the_field(
    raw: bytes, reason: str
) -> None:
    message = media_error(pb.DataBuffer(audio=audio(metadata_json=raw)))
    assert message.startswith(f"data_chunk.buffer.audio.metadata_json {reason}")


def test_json_payload_nested_too_deeply_is_an_error_naming_the_field() -> None:
    message = media_error(pb.DataBuffer(json=pb.JsonData(json_payload=DEEP)))
    assert message.startswith("data_chunk.buffer.json.json_payload is nested too deeply")


# ---------------------------------------------------------------- video and control


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"width": 0, "height": 2},
            "data_chunk.buffer.video.width is 0; it must be between 1 and 16,384 pixels.",
        ),
        (
            {"width": 2, "height": 20_000},
            "data_chunk.buffer.video.height is 20000; it must be between 1 and 16,384 pixels.",
        ),
        (
            {"width": 2, "height": 2, "codec": 9},
            "data_chunk.buffer.video.codec 9 is not a VideoCodec; leave it unset for raw frames.",
        ),
    ],
)
def test_video_dimensions_and_codec_out_of_range_are_errors_naming_the_field(
    fields: dict[str, int], message: str
) -> None:
    frame = pb.VideoFrame(pixel_data=bytes(12), format=pb.PIXEL_FORMAT_RGB24, **fields)
    assert media_error(pb.DataBuffer(video=frame)) == message


@pytest.mark.parametrize("size", [0, 4097])
def test_batch_hint_size_out_of_range_is_an_error_naming_the_field(size: int) -> None:
    control = pb.ControlMessage(batch_hint=pb.BatchHint(suggested_batch_size=size))
    assert media_error(pb.DataBuffer(control=control)) == (
        f"data_chunk.buffer.control.batch_hint.suggested_batch_size is {size}; it must be "
        "between 1 and 4,096."
    )


def test_cancel_speculation_backwards_span_is_an_error_naming_the_field() -> None:
    span = pb.CancelSpeculation(from_timestamp=9, to_timestamp=3)
    message = media_error(pb.DataBuffer(control=pb.ControlMessage(cancel_speculation=span)))
    assert message.startswith(
        "data_chunk.buffer.control.cancel_speculation.from_timestamp (9) is after its "
        "to_timestamp (3)"
    )


# ---------------------------------------------------------------- manifest


def manifest_problems(wire: epb.PipelineManifest) -> list[tuple[str, str]]:
    with pytest.raises(ManifestError) as caught:
        manifest_document(wire)
    return [(p.path, p.message) for p in caught.value.problems]


def test_manifest_numeric_fields_out_of_range_are_all_problems_with_paths() -> None:
    wire = epb.PipelineManifest(version="v1")
    node = wire.nodes.add(id="a", node_type="PassThrough", runtime_hint=9)
    node.input_types.extend([pb.DATA_TYPE_HINT_AUDIO, 99])
    node.output_types.append(42)
    node.capabilities.memory_gb = math.nan
    node.capabilities.gpu.min_memory_gb = -1.0
    node.capabilities.cpu.cores = 5000
    assert manifest_problems(wire) == [
        (
            "$.nodes[0].runtime_hint",
            "9 is not a RuntimeHint; leave it unset or use a value from 1 to 4.",
        ),
        (
            "$.nodes[0].capabilities.gpu.min_memory_gb",
            "-1.0 GB is not a memory size; it must be between 0 and 65,536 GB.",
        ),
        (
            "$.nodes[0].capabilities.cpu.cores",
            "5000 cores is out of range; it must be 0 (not given) to 1,024.",
        ),
        (
            "$.nodes[0].capabilities.memory_gb",
            "nan GB is not a memory size; it must be between 0 and 65,536 GB.",
        ),
        ("$.nodes[0].input_types[1]", "99 is not a DataTypeHint; use a value from 0 to 8."),
        ("$.nodes[0].output_types[0]", "42 is not a DataTypeHint; use a value from 0 to 8."),
    ]


def test_manifest_params_nested_too_deeply_are_a_problem_with_the_path() -> None:
    wire = epb.PipelineManifest(version="v1")
    wire.nodes.add(id="a", node_type="PassThrough", params=DEEP)
    ((path, message),) = manifest_problems(wire)
    assert path == "$.nodes[0].params"
    assert message.startswith("params is nested too deeply")


# ---------------------------------------------------------------- ResourceLimits, strictness


def context(**limits: object) -> ServiceContext:
    return ServiceContext(
        registry=default_registry(),
        limits=Limits(**limits),  # type: ignore[arg-type]
        manager=SessionManager(4),
        metrics=ServerMetrics(),
    )


@pytest.mark.parametrize("memory", [1, MIN_MEMORY_LIMIT_BYTES - 1])
def test_resource_limits_memory_too_small_is_an_error_naming_the_field(memory: int) -> None:
    requested = pb.ResourceLimits(max_memory_bytes=memory)
    with pytest.raises(InvalidRequestError) as caught:
        context().limits_for(requested, "init.resource_limits")
    assert str(caught.value) == (
        f"init.resource_limits.max_memory_bytes is {memory}; it must be 0 (not set) or at "
        "least 1024, since it bounds the size of every message."
    )
    assert error_response(caught.value).error_type == pb.ERROR_TYPE_VALIDATION


def test_resource_limits_zero_and_large_values_are_accepted() -> None:
    service = context(max_message_bytes=5000)
    assert service.limits_for(pb.ResourceLimits(), "resource_limits") == service.limits
    huge = pb.ResourceLimits(
        max_memory_bytes=2**64 - 1, max_timeout_ms=2**64 - 1, max_audio_samples=2**64 - 1
    )
    assert service.limits_for(huge, "resource_limits") == service.limits  # capped
    small = pb.ResourceLimits(max_memory_bytes=MIN_MEMORY_LIMIT_BYTES)
    assert service.limits_for(small, "resource_limits").max_message_bytes == 1024


ORIGINAL_CALCULATOR = epb.PipelineManifest(version="v1")
ORIGINAL_CALCULATOR.nodes.add(
    id="calc", node_type="CalculatorNode", params='{"operation": "add", "value": 5.0}'
)


def test_compile_returns_unknown_params_as_warnings() -> None:
    service = context()
    graph, warnings = service.compile(ORIGINAL_CALCULATOR, service.limits)
    assert list(graph.nodes) == ["calc"]
    assert [(w.node_id, w.path, w.param, w.closest) for w in warnings] == [
        ("calc", "$.nodes[0].params.value", "value", None)
    ]


def test_compile_with_strict_params_refuses_unknown_params() -> None:
    service = context(strict_params=True)
    with pytest.raises(ManifestError) as caught:
        service.compile(ORIGINAL_CALCULATOR, service.limits)
    assert [str(p) for p in caught.value.problems] == [
        "$.nodes[0].params.value: unknown parameter 'value'. Allowed parameters: operation."
    ]


# ---------------------------------------------------------------- compiled manifests


def _wire(params: str = "{}") -> epb.PipelineManifest:
    wire = epb.PipelineManifest(version="v1")
    wire.nodes.add(id="a", node_type="PassThrough", params=params)
    return wire


def test_a_manifest_sent_again_is_compiled_once() -> None:
    server = context()
    graph, warnings = server.compile(_wire('{"stray": 1}'), server.limits)
    again, warnings_again = server.compile(_wire('{"stray": 1}'), server.limits)
    assert again is graph  # the same compiled graph, shared
    assert warnings  # the warnings are reported each time
    assert warnings_again == warnings
    other, _ = server.compile(_wire(), server.limits)
    assert other is not graph


def test_strictness_and_node_limits_are_part_of_the_compiled_key() -> None:
    server = context()
    server.compile(_wire('{"stray": 1}'), server.limits)  # accepted with a warning
    with pytest.raises(ManifestError):
        server.compile(_wire('{"stray": 1}'), Limits(strict_params=True))
    with pytest.raises(ManifestError):  # refusals are never cached
        server.compile(_wire('{"stray": 1}'), Limits(strict_params=True))


def test_compiled_manifests_are_bounded_least_recently_used_first() -> None:
    server = context()
    first, _ = server.compile(_wire('{"n": 0}'), server.limits)
    for index in range(1, COMPILED_CACHE + 1):
        server.compile(_wire(f'{{"n": {index}}}'), server.limits)
    recompiled, _ = server.compile(_wire('{"n": 0}'), server.limits)
    assert recompiled is not first  # the oldest went
