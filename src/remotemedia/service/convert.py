"""Converting between the ``remotemedia.v1`` wire messages and runtime values (sans-IO).

Inbound conversion is strict where the original was lenient, and says where the
problem is (``data_chunk.buffer.audio: ...``):

- audio in F32, I16 and I32 is decoded by its declared format (the original decoded
  every DataChunk as F32); a ``num_samples`` that disagrees with the bytes is an error;
- node ``params`` that are not valid JSON are a manifest problem at
  ``$.nodes[i].params`` (the original silently used ``{}``);
- every JSON text a client sends (``params``, ``json_payload``, ``metadata_json``) goes
  through one guard, so that invalid or absurdly nested JSON is a validation error
  naming the field, never an internal error;
- every numeric field is checked against its range, and an error names the field and
  the range:

  =======================================  =============================================
  field                                    accepted
  =======================================  =============================================
  ``AudioBuffer.sample_rate``              1,000 to 768,000 Hz
  ``AudioBuffer.channels``                 1 to 8 (``media.MAX_CHANNELS``); 0 is an
                                           error, not mono
  ``AudioBuffer.format``                   F32, I16, I32 (UNSPECIFIED: F32)
  ``AudioBuffer.num_samples``              0 (not given) or the count in ``samples``
  ``VideoFrame.width``, ``height``         1 to 16,384
  ``VideoFrame.format``, ``codec``         the supported raw formats; a known codec
  ``BatchHint.suggested_batch_size``       1 to 4,096
  ``CancelSpeculation`` timestamps         ``from_timestamp`` <= ``to_timestamp``
  ``NodeManifest.runtime_hint``,           a value the protocol defines
  ``input_types``, ``output_types``
  ``CpuRequirement.cores``                 0 (not given) to 1,024
  ``memory_gb``, ``GpuRequirement``        0 to 65,536, finite
  ``.min_memory_gb``
  =======================================  =============================================

  Sequence numbers, timestamps and frame numbers take any value (sequences may not
  go backwards, which the stream checks); ResourceLimits and ``expected_chunk_size``
  are checked where they are applied (``context.py``, ``streaming.py``).

Outbound, audio is always F32, as the original sends it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from remotemedia.errors import InvalidMediaError, ManifestError, Problem
from remotemedia.manifest import Manifest
from remotemedia.media import MAX_CHANNELS, Audio, Binary, Control, Image, Json, RuntimeData, Text
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import execution_pb2 as epb

__all__ = ["data_from_wire", "data_to_wire", "manifest_document", "manifest_to_wire"]

MIN_SAMPLE_RATE = 1_000
MAX_SAMPLE_RATE = 768_000
"""Sample rates accepted from clients; anything else is a mistake or an attack (a
1 Hz chunk resampled to 16 kHz would grow 16,000-fold)."""
MAX_VIDEO_DIMENSION = 16_384
"""Largest video frame width or height (16K) accepted from clients."""
MAX_BATCH_HINT = 4_096
"""Largest ``BatchHint.suggested_batch_size``; no node batches more inputs than that."""
MAX_CPU_CORES = 1_024
"""Largest ``CpuRequirement.cores`` a manifest may ask for."""
MAX_MEMORY_GB = 65_536.0
"""Largest ``memory_gb`` or ``min_memory_gb`` (64 TiB) a manifest may ask for."""

_AUDIO_DTYPES: dict[int, tuple[str, float]] = {
    pb.AUDIO_FORMAT_UNSPECIFIED: ("<f4", 1.0),
    pb.AUDIO_FORMAT_F32: ("<f4", 1.0),
    pb.AUDIO_FORMAT_I16: ("<i2", 32768.0),
    pb.AUDIO_FORMAT_I32: ("<i4", 2147483648.0),
}
_PIXEL_FORMATS = {
    pb.PIXEL_FORMAT_RGB24: "rgb24",
    pb.PIXEL_FORMAT_RGBA32: "rgba32",
    pb.PIXEL_FORMAT_YUV420P: "yuv420p",
    pb.PIXEL_FORMAT_I420: "yuv420p",  # the same planar layout under another name
    pb.PIXEL_FORMAT_GRAY8: "gray8",
}
_PIXEL_CODES = {
    "rgb24": pb.PIXEL_FORMAT_RGB24,
    "rgba32": pb.PIXEL_FORMAT_RGBA32,
    "yuv420p": pb.PIXEL_FORMAT_YUV420P,
    "gray8": pb.PIXEL_FORMAT_GRAY8,
}
_RUNTIME_HINTS = {
    epb.RUNTIME_HINT_RUSTPYTHON: "rust_python",
    epb.RUNTIME_HINT_CPYTHON: "cpython",
    epb.RUNTIME_HINT_CPYTHON_WASM: "cpython_wasm",
    epb.RUNTIME_HINT_AUTO: "auto",
}
_CONTROL_KINDS = ("cancel_speculation", "batch_hint", "deadline_warning")


def data_from_wire(buffer: pb.DataBuffer, where: str) -> RuntimeData:
    """Convert a DataBuffer into a runtime value.

    Args:
        buffer: The wire message.
        where: Its place in the request, for error messages (``data_chunk.buffer``).

    Raises:
        InvalidMediaError: The buffer is malformed or of a kind this server does not
            take; the message names the field.
    """
    kind = buffer.WhichOneof("data_type")
    try:
        if kind == "audio":
            return audio_from_wire(buffer.audio, f"{where}.audio")
        if kind == "text":
            try:
                text = buffer.text.text_data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidMediaError(
                    f"{where}.text.text_data is not valid UTF-8: {exc}."
                ) from None
            return Text(text, channel=buffer.text.channel)
        if kind == "json":
            return _json_from_wire(buffer.json, f"{where}.json")
        if kind == "binary":
            mime = buffer.binary.mime_type or "application/octet-stream"
            return Binary(buffer.binary.data, mime_type=mime)
        if kind == "video":
            return _image_from_wire(buffer.video, f"{where}.video")
        if kind == "control":
            return _control_from_wire(buffer.control, f"{where}.control")
    except InvalidMediaError as exc:
        if exc.message.startswith(where):
            raise
        raise InvalidMediaError(f"{where}.{kind}: {exc.message}") from None
    if kind is None:
        raise InvalidMediaError(f"{where} has no data set; set one of audio, text, json, ...")
    raise InvalidMediaError(
        f"{where}.{kind}: {kind} buffers are not supported by this server; "
        "send audio, video, text, json, binary or control."
    )


def load_json(text: str | bytes) -> tuple[Any, str | None]:
    """Parse JSON text a client sent; the one guard for every JSON field of a request.

    Returns:
        The value and None; or None and why the text was refused, as the end of a
        sentence that starts with the field's name (``is not valid JSON (...)``).
    """
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
    except UnicodeDecodeError as exc:
        return None, f"is not valid UTF-8 ({exc.reason} at byte {exc.start})"
    except RecursionError:
        # json.loads recurses once per level: a deep enough text exhausts the stack.
        return None, "is nested too deeply to parse; keep JSON under a few hundred levels"


def _json_from_wire(message: pb.JsonData, where: str) -> Json:
    value, reason = load_json(message.json_payload)
    if reason is not None:
        raise InvalidMediaError(f"{where}.json_payload {reason}.")
    return Json(value)


def _check_range(value: float, low: float, high: float, field: str, unit: str = "") -> None:
    if not low <= value <= high:
        raise InvalidMediaError(
            f"{field} is {value}; it must be between {low:,g} and {high:,g}{unit}."
        )


def audio_from_wire(audio: pb.AudioBuffer, where: str) -> Audio:
    """Decode an AudioBuffer by its declared format (F32, I16 or I32) into float32 audio.

    Raises:
        InvalidMediaError: Unknown format, a byte count that is not whole samples, a
            ``num_samples`` that disagrees with the bytes, or invalid audio.
    """
    decoding = _AUDIO_DTYPES.get(audio.format)
    if decoding is None:
        raise InvalidMediaError(f"{where}.format {audio.format} is not F32, I16 or I32.")
    dtype, scale = decoding
    width = np.dtype(dtype).itemsize
    if len(audio.samples) % width:
        raise InvalidMediaError(
            f"{where}.samples holds {len(audio.samples)} bytes, which is not a whole number "
            f"of {width}-byte samples for format {pb.AudioFormat.Name(audio.format)}."
        )
    raw = np.frombuffer(audio.samples, dtype=dtype)
    if audio.num_samples and audio.num_samples != raw.size:
        raise InvalidMediaError(
            f"{where}.num_samples is {audio.num_samples} but samples holds {raw.size} samples "
            "(num_samples counts the samples of all channels)."
        )
    if not MIN_SAMPLE_RATE <= audio.sample_rate <= MAX_SAMPLE_RATE:
        raise InvalidMediaError(
            f"{where}.sample_rate is {audio.sample_rate}; it must be between "
            f"{MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz."
        )
    if not 1 <= audio.channels <= MAX_CHANNELS:
        # 0 is the proto default: the sender forgot the field. Taking it as mono would
        # garble audio that was really stereo, so ask instead of guessing.
        raise InvalidMediaError(
            f"{where}.channels is {audio.channels}; it must be between 1 and "
            f"{MAX_CHANNELS} (1 for mono)."
        )
    samples = raw if scale == 1.0 else raw / np.float32(scale)
    metadata: Mapping[str, Any] = {}
    if audio.HasField("metadata_json") and audio.metadata_json:
        parsed, reason = load_json(audio.metadata_json)
        if reason is not None:
            raise InvalidMediaError(f"{where}.metadata_json {reason}.")
        if not isinstance(parsed, dict):
            raise InvalidMediaError(f"{where}.metadata_json must be a JSON object.")
        metadata = parsed
    try:
        return Audio(samples, audio.sample_rate, audio.channels, metadata=metadata)
    except InvalidMediaError as exc:
        raise InvalidMediaError(f"{where}: {exc.message}") from None


def _image_from_wire(video: pb.VideoFrame, where: str) -> Image:
    pixel_format = _PIXEL_FORMATS.get(video.format)
    if pixel_format is None:
        name = (
            pb.PixelFormat.Name(video.format)
            if video.format in pb.PixelFormat.values()
            else video.format
        )
        raise InvalidMediaError(
            f"{where}.format {name} is not supported; use RGB24, RGBA32, YUV420P, I420 or GRAY8."
        )
    if video.codec not in pb.VideoCodec.values():
        raise InvalidMediaError(
            f"{where}.codec {video.codec} is not a VideoCodec; leave it unset for raw frames."
        )
    _check_range(video.width, 1, MAX_VIDEO_DIMENSION, f"{where}.width", " pixels")
    _check_range(video.height, 1, MAX_VIDEO_DIMENSION, f"{where}.height", " pixels")
    return Image(
        video.pixel_data,
        video.width,
        video.height,
        pixel_format,  # type: ignore[arg-type]
        frame_number=video.frame_number,
        timestamp_us=video.timestamp_us,
    )


def _control_from_wire(control: pb.ControlMessage, where: str) -> Control:
    kind = control.WhichOneof("message_type") or "unspecified"
    if kind == "batch_hint":
        size = control.batch_hint.suggested_batch_size
        _check_range(size, 1, MAX_BATCH_HINT, f"{where}.batch_hint.suggested_batch_size")
    if kind == "cancel_speculation":
        span = control.cancel_speculation
        if span.from_timestamp > span.to_timestamp:
            raise InvalidMediaError(
                f"{where}.cancel_speculation.from_timestamp ({span.from_timestamp}) is after "
                f"its to_timestamp ({span.to_timestamp}); send the earlier time first."
            )
    fields: dict[str, Any] = {}
    if kind != "unspecified":
        message = getattr(control, kind)
        fields = {f.name: getattr(message, f.name) for f in message.DESCRIPTOR.fields}
    if control.metadata:
        fields["metadata"] = control.metadata
    if control.timestamp_ms:
        fields["timestamp_ms"] = control.timestamp_ms
    return Control(kind, control.segment_id, fields=fields)


def data_to_wire(data: RuntimeData) -> pb.DataBuffer:
    """Convert a runtime value into a DataBuffer (audio always as F32)."""
    if isinstance(data, Audio):
        audio = pb.AudioBuffer(
            samples=data.samples.astype("<f4", copy=False).tobytes(),
            sample_rate=data.sample_rate,
            channels=data.channels,
            format=pb.AUDIO_FORMAT_F32,
            num_samples=data.samples.size,
        )
        if data.metadata:
            audio.metadata_json = json.dumps(dict(data.metadata), separators=(",", ":")).encode()
        return pb.DataBuffer(audio=audio)
    if isinstance(data, Text):
        return pb.DataBuffer(
            text=pb.TextBuffer(
                text_data=data.text.encode("utf-8"), encoding="utf-8", channel=data.channel
            )
        )
    if isinstance(data, Json):
        # An event of remotemedia.events is a Json whose value is its wire form: the
        # dict its node sent before events were typed, so clients see the same bytes.
        payload = json.dumps(data.value, separators=(",", ":"))
        return pb.DataBuffer(json=pb.JsonData(json_payload=payload))
    if isinstance(data, Binary):
        return pb.DataBuffer(binary=pb.BinaryBuffer(data=data.data, mime_type=data.mime_type))
    if isinstance(data, Image):
        return pb.DataBuffer(
            video=pb.VideoFrame(
                pixel_data=data.pixels,
                width=data.width,
                height=data.height,
                format=_PIXEL_CODES[data.pixel_format],
                frame_number=data.frame_number,
                timestamp_us=data.timestamp_us,
            )
        )
    return pb.DataBuffer(control=_control_to_wire(data))


def _control_to_wire(control: Control) -> pb.ControlMessage:
    message = pb.ControlMessage(segment_id=control.segment_id)
    fields = dict(control.fields)
    if isinstance(fields.get("metadata"), str):
        message.metadata = fields.pop("metadata")
    if isinstance(fields.get("timestamp_ms"), int):
        message.timestamp_ms = fields.pop("timestamp_ms")
    if control.kind in _CONTROL_KINDS:
        inner = getattr(message, control.kind)
        for name, value in fields.items():
            if name in inner.DESCRIPTOR.fields_by_name:
                setattr(inner, name, value)
        inner.SetInParent()
    return message


def manifest_document(manifest: epb.PipelineManifest) -> dict[str, Any]:
    """Turn a wire PipelineManifest into a manifest document (as if parsed from YAML).

    Raises:
        ManifestError: A node's ``params`` is not valid JSON, or a numeric field is out
            of range (every such place is listed, each with its path).
    """
    problems: list[Problem] = []
    nodes = []
    for index, node in enumerate(manifest.nodes):
        path = f"$.nodes[{index}]"
        params: Any = {}
        if node.params.strip():
            params, reason = load_json(node.params)
            if reason is not None:
                params = {}
                problems.append(
                    Problem(
                        f"{path}.params", f"params {reason}; send a JSON object such as '{{}}'."
                    )
                )
        document: dict[str, Any] = {"id": node.id, "node_type": node.node_type, "params": params}
        if node.is_streaming:
            document["is_streaming"] = True
        if node.host:
            document["host"] = node.host
        if node.runtime_hint in _RUNTIME_HINTS:
            document["runtime_hint"] = _RUNTIME_HINTS[node.runtime_hint]
        elif node.runtime_hint != epb.RUNTIME_HINT_UNSPECIFIED:
            problems.append(
                Problem(
                    f"{path}.runtime_hint",
                    f"{node.runtime_hint} is not a RuntimeHint; leave it unset or use a "
                    f"value from 1 to {max(epb.RuntimeHint.values())}.",
                )
            )
        if node.HasField("capabilities"):
            document["capabilities"] = _capabilities(
                node.capabilities, f"{path}.capabilities", problems
            )
        for key in ("input_types", "output_types"):
            hints = getattr(node, key)
            if hints:
                document[key] = _type_hints(hints, f"{path}.{key}", problems)
        nodes.append(document)
    if problems:
        raise ManifestError(problems)
    return {
        "version": manifest.version,
        "metadata": {
            "name": manifest.metadata.name,
            "description": manifest.metadata.description,
            "created_at": manifest.metadata.created_at,
        },
        "nodes": nodes,
        # `from` is a Python keyword: the generated attribute is reachable only by getattr.
        "connections": [{"from": getattr(c, "from"), "to": c.to} for c in manifest.connections],
    }


def _type_hints(hints: Any, path: str, problems: list[Problem]) -> list[str]:
    names = []
    for position, hint in enumerate(hints):
        if hint in pb.DataTypeHint.values():
            names.append(pb.DataTypeHint.Name(hint))
        else:
            problems.append(
                Problem(
                    f"{path}[{position}]",
                    f"{hint} is not a DataTypeHint; use a value from 0 to "
                    f"{max(pb.DataTypeHint.values())}.",
                )
            )
    return names


def _capabilities(
    capabilities: epb.CapabilityRequirements, path: str, problems: list[Problem]
) -> dict[str, Any]:
    def memory(value: float, field: str) -> None:
        if not (math.isfinite(value) and 0 <= value <= MAX_MEMORY_GB):
            problems.append(
                Problem(
                    f"{path}.{field}",
                    f"{value} GB is not a memory size; it must be between 0 and "
                    f"{MAX_MEMORY_GB:,g} GB.",
                )
            )

    document: dict[str, Any] = {}
    if capabilities.HasField("gpu"):
        gpu = capabilities.gpu
        memory(gpu.min_memory_gb, "gpu.min_memory_gb")
        document["gpu"] = {
            "type": gpu.type,
            "min_memory_gb": gpu.min_memory_gb,
            "required": gpu.required,
        }
    if capabilities.HasField("cpu"):
        cpu = capabilities.cpu
        if cpu.cores > MAX_CPU_CORES:
            problems.append(
                Problem(
                    f"{path}.cpu.cores",
                    f"{cpu.cores} cores is out of range; it must be 0 (not given) to "
                    f"{MAX_CPU_CORES:,}.",
                )
            )
        document["cpu"] = {"cores": cpu.cores or None, "arch": cpu.arch or None}
    memory(capabilities.memory_gb, "memory_gb")
    if capabilities.memory_gb:
        document["memory_gb"] = capabilities.memory_gb
    return document


_HINT_CODES = {name: code for code, name in _RUNTIME_HINTS.items()}


def manifest_to_wire(manifest: Manifest) -> epb.PipelineManifest:
    """Turn a manifest into the wire PipelineManifest (params as JSON text).

    Raises:
        ManifestError: A node says where it runs (``executor``): the wire protocol has
            no field for that, and a server decides it by its own rules
            (``serve --executor``), so the field would be lost without a word. The
            same for ``is_output_node`` (the original's wire has no field for it).
    """
    placed = [
        Problem(
            f"$.nodes[{index}].executor",
            f"node '{spec.id}' asks to run '{spec.executor}', which a manifest sent to a "
            "server cannot say: the server places nodes by its own rules (remotemedia "
            f"serve --executor {spec.node_type}={spec.executor}). Remove the field.",
        )
        for index, spec in enumerate(manifest.nodes)
        if spec.executor is not None
    ]
    # A sink in the middle of a graph (the manifest's is_output_node) has no wire
    # field either: dropping it would silently lose that node's results.
    placed += [
        Problem(
            f"$.nodes[{index}].is_output_node",
            f"node '{spec.id}' is marked is_output_node, which the wire protocol cannot "
            "carry. To get its outputs from a server, connect it to a PassThrough node "
            "as well: that node's outputs are results.",
        )
        for index, spec in enumerate(manifest.nodes)
        if spec.is_output_node
    ]
    if placed:
        raise ManifestError(placed)
    wire = epb.PipelineManifest(
        version=manifest.version,
        metadata=epb.ManifestMetadata(
            name=manifest.metadata.name,
            description=manifest.metadata.description,
            created_at=manifest.metadata.created_at,
        ),
    )
    for spec in manifest.nodes:
        node = wire.nodes.add(
            id=spec.id,
            node_type=spec.node_type,
            params=json.dumps(dict(spec.params)),
            is_streaming=spec.is_streaming,
            host=spec.host or "",
        )
        if spec.runtime_hint is not None:
            node.runtime_hint = _HINT_CODES[spec.runtime_hint]
    for connection in manifest.connections:
        wire.connections.add(**{"from": connection.source, "to": connection.target})
    return wire
