"""Sans-IO parts of the service: config, auth, version, status, metrics, wire conversion."""

from __future__ import annotations

import json

import numpy as np
import pytest

from remotemedia import Audio, Binary, Control, Image, Json, Text
from remotemedia.config import AuthConfig, ConfigError, Limits, ServerConfig, auth_from_env
from remotemedia.errors import (
    AuthenticationError,
    InvalidMediaError,
    InvalidRequestError,
    ManifestError,
    NodeError,
    Problem,
    ResourceLimitError,
    SessionRejected,
)
from remotemedia.executors.reports import WorkerCall
from remotemedia.manifest import manifest_from_dict
from remotemedia.service.auth import BAD_FORMAT, BAD_TOKEN, MISSING, check_authorization
from remotemedia.service.convert import (
    data_from_wire,
    data_to_wire,
    manifest_document,
    manifest_to_wire,
)
from remotemedia.service.metrics import BoundedLabel, Counter, Histogram, Registry, ServerMetrics
from remotemedia.service.status import (
    error_response,
    grpc_status,
    lost_input_response,
    lost_input_sequence,
)
from remotemedia.service.version import compatibility
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import execution_pb2 as epb

# ---------------------------------------------------------------- config


def test_auth_from_env_requires_auth_when_tokens_are_set() -> None:
    auth = auth_from_env({"GRPC_AUTH_TOKENS": " a , b ,,"})
    assert (auth.tokens, auth.required) == (("a", "b"), True)


def test_auth_from_env_can_be_turned_off_and_adds_flag_tokens() -> None:
    auth = auth_from_env({"GRPC_AUTH_TOKENS": "a", "GRPC_REQUIRE_AUTH": "false"}, ("c",))
    assert (auth.tokens, auth.required) == (("a", "c"), False)


def test_auth_required_without_tokens_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no tokens are configured; set GRPC_AUTH_TOKENS"):
        auth_from_env({"GRPC_REQUIRE_AUTH": "true"})


def test_auth_from_env_rejects_a_misspelt_flag() -> None:
    with pytest.raises(ConfigError, match="GRPC_REQUIRE_AUTH must be true or false, got 'ture'"):
        auth_from_env({"GRPC_REQUIRE_AUTH": "ture"})


def test_limits_can_only_be_lowered_by_a_client() -> None:
    limits = Limits(max_chunk_samples=1000, max_duration=60.0, max_message_bytes=5000)
    lowered = limits.lowered(max_memory_bytes=100, max_timeout_ms=2000, max_audio_samples=10)
    assert (lowered.max_message_bytes, lowered.max_duration, lowered.max_chunk_samples) == (
        100,
        2.0,
        10,
    )
    raised = limits.lowered(max_memory_bytes=10**9, max_timeout_ms=10**9, max_audio_samples=10**9)
    assert raised == limits
    assert limits.lowered() == limits  # zero means "not set"


def test_limits_reject_non_positive_values() -> None:
    with pytest.raises(ConfigError, match="max_sessions must be positive, got 0"):
        Limits(max_sessions=0)


@pytest.mark.parametrize(
    ("bind", "expected"),
    [("127.0.0.1:50051", ("127.0.0.1", 50051)), ("[::1]:7", ("::1", 7)), (":9", ("0.0.0.0", 9))],
)
def test_server_config_splits_the_bind_address(bind: str, expected: tuple[str, int]) -> None:
    assert ServerConfig(bind=bind).host_port == expected


def test_server_config_rejects_a_bind_address_without_port() -> None:
    with pytest.raises(ConfigError, match="must look like host:port"):
        _ = ServerConfig(bind="localhost").host_port


# ---------------------------------------------------------------- auth

AUTH = AuthConfig(tokens=("good", "other"), required=True)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (None, MISSING),
        ("Token good", BAD_FORMAT),
        ("bearer good", BAD_FORMAT),
        ("Bearer bad", BAD_TOKEN),
    ],
)
def test_auth_rejects_with_the_original_messages(header: str | None, message: str) -> None:
    with pytest.raises(AuthenticationError) as caught:
        check_authorization(header, AUTH)
    assert str(caught.value) == message


def test_auth_accepts_any_configured_token_and_anything_when_not_required() -> None:
    check_authorization("Bearer other", AUTH)
    check_authorization(None, AuthConfig())
    assert MISSING.startswith("Missing authorization header. Include 'authorization: Bearer")


# ---------------------------------------------------------------- version


@pytest.mark.parametrize("version", ["v1", "1", "1.2.3", "v1.0", "test-v1.0"])
def test_version_major_one_is_compatible(version: str) -> None:
    compatible, message = compatibility(version)
    assert compatible
    assert "v1" in message


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        ("v2", "is protocol v2"),
        ("0.2.0", "is protocol v0"),
        ("", "is empty"),
        ("abc", "Cannot tell"),
    ],
)
def test_version_other_majors_are_incompatible_with_a_reason(version: str, reason: str) -> None:
    compatible, message = compatibility(version)
    assert not compatible
    assert reason in message


# ---------------------------------------------------------------- status


@pytest.mark.parametrize(
    ("error", "error_type", "status"),
    [
        (ManifestError([Problem("$.nodes", "no")]), pb.ERROR_TYPE_VALIDATION, "INVALID_ARGUMENT"),
        (InvalidMediaError("bad audio"), pb.ERROR_TYPE_VALIDATION, "INVALID_ARGUMENT"),
        (InvalidRequestError("bad order"), pb.ERROR_TYPE_VALIDATION, "INVALID_ARGUMENT"),
        (NodeError("n", "T", "boom", sequence=3), pb.ERROR_TYPE_NODE_EXECUTION, "INTERNAL"),
        (ResourceLimitError("too big"), pb.ERROR_TYPE_RESOURCE_LIMIT, "RESOURCE_EXHAUSTED"),
        (SessionRejected("full"), pb.ERROR_TYPE_RESOURCE_LIMIT, "RESOURCE_EXHAUSTED"),
        (SessionRejected("bye", shutting_down=True), pb.ERROR_TYPE_RESOURCE_LIMIT, "UNAVAILABLE"),
        (AuthenticationError("who"), pb.ERROR_TYPE_AUTHENTICATION, "UNAUTHENTICATED"),
        (RuntimeError("oops"), pb.ERROR_TYPE_INTERNAL, "INTERNAL"),
    ],
)
def test_errors_map_to_their_type_and_status(
    error: BaseException, error_type: int, status: str
) -> None:
    assert error_response(error).error_type == error_type
    assert grpc_status(error) == status


def test_node_error_response_names_the_node_and_sequence() -> None:
    response = error_response(NodeError("vad", "SileroVADNode", "model broke", sequence=7))
    assert (response.failing_node_id, response.context) == ("vad", "input sequence 7")
    assert "Node 'vad' (SileroVADNode) failed" in response.message


def test_manifest_error_response_lists_the_paths() -> None:
    error = ManifestError([Problem("$.nodes[0].id", "x"), Problem("$.connections[1].to", "y")])
    assert error_response(error).context == "manifest: $.nodes[0].id; $.connections[1].to"


def test_lost_input_response_round_trips_its_sequence() -> None:
    error = NodeError("whisper", "WhisperNode", "the worker died", sequence=12)
    response = lost_input_response(error, 12)
    assert lost_input_sequence(response) == 12
    assert response.error_type == pb.ERROR_TYPE_NODE_EXECUTION
    assert (response.failing_node_id, response.message) == ("whisper", str(error))
    # Machine-readable first, then the sentence other clients show as it is.
    assert response.context == (
        "lost_input sequence=12: input sequence 12 was lost; the session continues"
    )


@pytest.mark.parametrize(
    "context",
    [
        "",
        "input sequence 7",  # a fatal NodeError
        "input sequence 7 was lost; the session continues",  # the sentence alone
        "manifest: $.nodes[0].id",
        "lost_input sequence=: input lost",
        "lost_input sequence=-1: input lost",
        "lost_input sequence=\u00b2: input lost",
        "lost_inputs sequence=1: input lost",
        "see lost_input sequence=1: input lost",
    ],
)
def test_lost_input_sequence_is_none_for_any_other_context(context: str) -> None:
    response = pb.ErrorResponse(error_type=pb.ERROR_TYPE_NODE_EXECUTION, context=context)
    assert lost_input_sequence(response) is None


def test_unexpected_error_response_does_not_leak_internals() -> None:
    response = error_response(KeyError("secret-path"))
    assert "secret-path" not in response.message
    assert "KeyError" in response.message


# ---------------------------------------------------------------- metrics


def test_histogram_renders_cumulative_buckets_sum_and_count() -> None:
    registry = Registry()
    histogram = registry.add(Histogram("h_seconds", "help", (0.1, 1.0), ("k",)))
    for value in (0.05, 0.5, 5.0):
        histogram.observe(value, k="a")
    text = registry.render()
    assert 'h_seconds_bucket{k="a",le="0.1"} 1' in text
    assert 'h_seconds_bucket{k="a",le="1"} 2' in text
    assert 'h_seconds_bucket{k="a",le="+Inf"} 3' in text
    assert 'h_seconds_sum{k="a"} 5.55' in text
    assert 'h_seconds_count{k="a"} 3' in text
    assert "# TYPE h_seconds histogram" in text


def test_a_histograms_bound_observer_records_like_observe() -> None:
    bound, plain = (Histogram("h_seconds", "help", (0.1, 1.0), ("k",)) for _ in range(2))
    observe = bound.observer(k="a")
    for value in (0.05, 0.5, 5.0):
        observe(value)
        plain.observe(value, k="a")
    assert bound.samples() == plain.samples()
    assert (bound.count(k="a"), bound.sum(k="a")) == (3, pytest.approx(5.55))


def test_worker_replacements_and_trips_get_metrics_of_their_own() -> None:
    metrics = ServerMetrics()
    metrics.count_event("WhisperNode", "worker_restarted", 1)
    metrics.count_event("WhisperNode", "worker_recycled", 2)
    metrics.count_event("WhisperNode", "speculation_started", 1)
    assert metrics.worker_restarts.value(node_type="WhisperNode", reason="failed") == 1
    assert metrics.worker_restarts.value(node_type="WhisperNode", reason="memory") == 2
    assert metrics.node_events.value(node_type="WhisperNode", event="speculation_started") == 1
    assert metrics.node_events.value(node_type="WhisperNode", event="worker_restarted") == 0
    worked = (1_000_000_000, 1_200_000_000)  # 0.2 s of the node's own work
    metrics.worker_call(WorkerCall("asr", "WhisperNode", 42, 0, 0.25, worked))
    metrics.worker_call(WorkerCall("asr", "WhisperNode", 42, 0, 0.1, None))  # did not say
    assert metrics.worker_round_trip.count(node_type="WhisperNode") == 2
    assert metrics.worker_hop.count(node_type="WhisperNode") == 1
    assert metrics.worker_hop.sum(node_type="WhisperNode") == pytest.approx(0.05)


def test_a_clients_pipeline_names_are_bounded_as_a_label() -> None:
    label = BoundedLabel(2)
    assert [label(name) for name in ("a", "b", "c", "a", "d")] == ["a", "b", "other", "a", "other"]


def test_counter_checks_labels_and_escapes_values() -> None:
    counter = Counter("c_total", "help", ("who",))
    counter.inc(who='a "quoted"\nname')
    assert counter.samples() == ['c_total{who="a \\"quoted\\"\\nname"} 1']
    with pytest.raises(ValueError, match="takes labels"):
        counter.inc(other="x")


def test_server_metrics_read_live_values_at_render_time() -> None:
    live, draining = [3], [False]
    metrics = ServerMetrics(
        active_sessions=lambda: live[0],
        edge_depths=lambda: [(("VAD",), 2.0)],
        draining=lambda: draining[0],
    )
    assert "remotemedia_grpc_active_streams 3" in metrics.render()
    assert "remotemedia_draining 0" in metrics.render()
    live[0], draining[0] = 0, True
    text = metrics.render()
    assert "remotemedia_grpc_active_streams 0" in text
    assert "remotemedia_draining 1" in text
    assert 'remotemedia_edge_queue_depth{node_type="VAD"} 2' in text


# ---------------------------------------------------------------- conversion


@pytest.mark.parametrize(
    "data",
    [
        Text("hello", channel="ui"),
        Json({"a": [1, 2.5, None, True]}),
        Binary(b"\x00\x01", mime_type="image/png"),
        Image(bytes(12), 2, 2, "rgb24", frame_number=4, timestamp_us=9),
        Control("batch_hint", "seg-1", fields={"suggested_batch_size": 8}),
    ],
)
def test_data_round_trips_through_the_wire(data: object) -> None:
    assert data_from_wire(data_to_wire(data), "x") == data  # type: ignore[arg-type]


def test_audio_round_trips_as_f32_with_metadata() -> None:
    audio = Audio(np.linspace(-1, 1, 8, dtype=np.float32), 8_000, 2, metadata={"t": 1})
    wire = data_to_wire(audio)
    assert (wire.audio.format, wire.audio.num_samples) == (pb.AUDIO_FORMAT_F32, 8)
    back = data_from_wire(wire, "x")
    assert isinstance(back, Audio)
    np.testing.assert_array_equal(back.samples, audio.samples)
    assert (back.sample_rate, back.channels, dict(back.metadata)) == (8_000, 2, {"t": 1})


@pytest.mark.parametrize(
    ("fmt", "dtype", "scale"),
    [(pb.AUDIO_FORMAT_I16, "<i2", 32768.0), (pb.AUDIO_FORMAT_I32, "<i4", 2147483648.0)],
)
def test_integer_audio_is_decoded_by_its_format(fmt: int, dtype: str, scale: float) -> None:
    ints = np.array([0, 1, -1, np.iinfo(dtype).max, np.iinfo(dtype).min], dtype=dtype)
    wire = pb.DataBuffer(
        audio=pb.AudioBuffer(samples=ints.tobytes(), sample_rate=16_000, channels=1, format=fmt)
    )
    audio = data_from_wire(wire, "data_chunk.buffer")
    assert isinstance(audio, Audio)
    np.testing.assert_allclose(audio.samples, ints / scale, rtol=1e-6)


@pytest.mark.parametrize(
    ("audio", "message"),
    [
        (
            pb.AudioBuffer(samples=b"\x00" * 6, sample_rate=16_000, format=pb.AUDIO_FORMAT_F32),
            "not a whole number of 4-byte samples",
        ),
        (
            pb.AudioBuffer(samples=b"\x00" * 8, sample_rate=16_000, num_samples=3),
            "num_samples is 3 but samples holds 2",
        ),
        (
            pb.AudioBuffer(samples=b"\x00" * 8, sample_rate=0),
            "sample_rate is 0; it must be between 1000 and 768000 Hz",
        ),
        (
            pb.AudioBuffer(samples=b"\x00" * 8, sample_rate=16_000, format=9),
            "format 9 is not F32, I16 or I32",
        ),
    ],
)
def test_bad_audio_is_an_error_naming_the_field(audio: pb.AudioBuffer, message: str) -> None:
    with pytest.raises(InvalidMediaError, match=r"data_chunk\.buffer\.audio") as caught:
        data_from_wire(pb.DataBuffer(audio=audio), "data_chunk.buffer")
    assert message in str(caught.value)


def test_bad_text_json_and_empty_buffers_are_errors_naming_the_field() -> None:
    with pytest.raises(InvalidMediaError, match=r"x\.text\.text_data is not valid UTF-8"):
        data_from_wire(pb.DataBuffer(text=pb.TextBuffer(text_data=b"\xff")), "x")
    with pytest.raises(InvalidMediaError, match=r"x\.json\.json_payload is not valid JSON"):
        data_from_wire(pb.DataBuffer(json=pb.JsonData(json_payload="{")), "x")
    with pytest.raises(InvalidMediaError, match="x has no data set"):
        data_from_wire(pb.DataBuffer(), "x")
    with pytest.raises(InvalidMediaError, match="tensor buffers are not supported"):
        data_from_wire(pb.DataBuffer(tensor=pb.TensorBuffer()), "x")


def test_manifest_round_trips_through_the_wire() -> None:
    document = {
        "version": "v1",
        "metadata": {"name": "n", "description": "d", "created_at": "now"},
        "nodes": [
            {
                "id": "a",
                "node_type": "PassThrough",
                "params": {"x": [1, 2]},
                "runtime_hint": "cpython",
            },
            {"id": "b", "node_type": "Echo", "params": {}},
        ],
        "connections": [{"from": "a", "to": "b"}],
    }
    wire = manifest_to_wire(manifest_from_dict(document))
    assert json.loads(wire.nodes[0].params) == {"x": [1, 2]}
    assert getattr(wire.connections[0], "from") == "a"
    assert manifest_document(wire) == document


def test_a_node_placed_by_the_manifest_cannot_be_sent_to_a_server() -> None:
    document = {
        "version": "v1",
        "nodes": [
            {"id": "a", "node_type": "PassThrough"},
            {"id": "w", "node_type": "Echo", "executor": "process"},
        ],
    }
    with pytest.raises(ManifestError) as caught:
        manifest_to_wire(manifest_from_dict(document))
    (problem,) = caught.value.problems
    assert problem.path == "$.nodes[1].executor"
    assert "serve --executor Echo=process" in problem.message


def test_an_output_node_in_mid_graph_cannot_be_sent_to_a_server() -> None:
    document = {
        "version": "v1",
        "nodes": [
            {"id": "a", "node_type": "PassThrough", "is_output_node": True},
            {"id": "b", "node_type": "Echo"},
        ],
        "connections": [{"from": "a", "to": "b"}],
    }
    with pytest.raises(ManifestError) as caught:
        manifest_to_wire(manifest_from_dict(document))
    (problem,) = caught.value.problems
    assert problem.path == "$.nodes[0].is_output_node"
    assert "PassThrough" in problem.message


def test_params_that_are_not_json_are_problems_with_paths() -> None:
    wire = epb.PipelineManifest(version="v1")
    wire.nodes.add(id="a", node_type="PassThrough", params="{}")
    wire.nodes.add(id="b", node_type="PassThrough", params="{not json")
    wire.nodes.add(id="c", node_type="PassThrough", params="")
    with pytest.raises(ManifestError) as caught:
        manifest_document(wire)
    (problem,) = caught.value.problems
    assert problem.path == "$.nodes[1].params"
    assert "params is not valid JSON" in problem.message
