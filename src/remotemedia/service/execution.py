"""The unary RPCs: ExecutePipeline and GetVersion, in Trio, independent of the transport."""

from __future__ import annotations

import logging
import time

import trio

import remotemedia
from remotemedia.errors import (
    InvalidRequestError,
    RemoteMediaError,
    ResourceLimitError,
    SessionRejected,
    UnknownNodeError,
)
from remotemedia.media import Audio, RuntimeData
from remotemedia.service.context import ServiceContext
from remotemedia.service.convert import data_from_wire, data_to_wire
from remotemedia.service.status import error_response
from remotemedia.service.version import PROTOCOL_VERSION, SUPPORTED_PROTOCOLS, compatibility
from remotemedia.session import open_session
from remotemedia.v1 import common_pb2 as pb
from remotemedia.v1 import execution_pb2 as epb

__all__ = ["MissingManifestError", "execute_pipeline", "get_version"]

logger = logging.getLogger(__name__)


class MissingManifestError(InvalidRequestError):
    """ExecuteRequest without a manifest (a gRPC INVALID_ARGUMENT, as in the original)."""


async def execute_pipeline(
    request: epb.ExecuteRequest, context: ServiceContext
) -> epb.ExecuteResponse:
    """Run a pipeline once over ``data_inputs`` (keyed by node id) and return its outputs.

    ``data_outputs`` holds, for every sink node, its last output. Errors are returned
    typed in ``ExecuteResponse.error``.

    Raises:
        MissingManifestError: The request has no manifest.
    """
    if not request.HasField("manifest"):
        raise MissingManifestError("Manifest is required.")
    started = time.perf_counter()
    try:
        return await _admitted(request, context, started)
    except SessionRejected:
        raise
    except Exception as error:
        if not isinstance(error, RemoteMediaError):
            logger.exception("ExecutePipeline failed unexpectedly.")
        response = error_response(error)
        context.metrics.errors.inc(error_type=pb.ErrorType.Name(response.error_type))
        return epb.ExecuteResponse(error=response)


async def _admitted(
    request: epb.ExecuteRequest, context: ServiceContext, started: float
) -> epb.ExecuteResponse:
    """Run under admission: a unary run counts against --max-sessions and ends on drain."""
    with trio.CancelScope() as scope, context.manager.admit(f"execute-{id(scope)}", scope):
        return await _execute(request, context, started)
    raise SessionRejected("The server is shutting down.", shutting_down=True)


async def _execute(
    request: epb.ExecuteRequest, context: ServiceContext, started: float
) -> epb.ExecuteResponse:
    limits = context.limits_for(request.resource_limits, "resource_limits")
    graph, warnings = context.compile(request.manifest, limits)
    # A unary response has no place for warnings: the log is where they go.
    context.log_param_warnings(warnings, "ExecutePipeline")
    registry = context.registry
    if not request.data_inputs:
        raise InvalidRequestError(
            "ExecutePipeline needs at least one entry in data_inputs, keyed by the id of "
            "the node it goes to."
        )
    inputs: list[tuple[str, RuntimeData]] = []
    for node_id in sorted(request.data_inputs):
        if node_id not in graph.nodes:
            raise UnknownNodeError(
                f"data_inputs key '{node_id}' is not a node of this pipeline; its nodes are: "
                f"{', '.join(graph.nodes)}."
            )
        data = data_from_wire(request.data_inputs[node_id], f"data_inputs[{node_id}]")
        if isinstance(data, Audio) and data.samples.size > limits.max_chunk_samples:
            raise ResourceLimitError(
                f"data_inputs[{node_id}] holds {data.samples.size} audio samples; the limit is "
                f"{limits.max_chunk_samples}."
            )
        inputs.append((node_id, data))

    last: dict[str, pb.DataBuffer] = {}
    with trio.move_on_after(limits.max_duration) as deadline:
        async with open_session(
            graph,
            registry,
            init_timeout=limits.init_timeout,
            executors=context.executors,
            workers=context.workers,
        ) as session:

            async def feed() -> None:
                for sequence, (node_id, data) in enumerate(inputs):
                    await session.send(data, node_id=node_id, sequence=sequence)
                await session.send_eof()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(feed)
                async for result in session:
                    if result.error is not None:
                        raise result.error  # a unary call has no input to spare
                    assert result.data is not None
                    last[result.node_id] = data_to_wire(result.data)
            stats = session.stats
    if deadline.cancelled_caught:
        raise ResourceLimitError(
            f"The pipeline did not finish within {limits.max_duration:g} s (the time limit)."
        )
    busy = sum(s.busy for s in stats.values())
    metrics = pb.ExecutionMetrics(
        wall_time_ms=(time.perf_counter() - started) * 1000,
        cpu_time_ms=busy * 1000,
        node_metrics={
            node_id: pb.NodeMetrics(execution_time_ms=s.busy * 1000, items_processed=s.inputs)
            for node_id, s in stats.items()
        },
    )
    return epb.ExecuteResponse(
        result=epb.ExecutionResult(
            data_outputs=last,
            metrics=metrics,
            node_results=[
                pb.NodeResult(node_id=node_id, status=pb.NODE_STATUS_SUCCESS) for node_id in stats
            ],
            status=pb.EXECUTION_STATUS_SUCCESS,
        )
    )


def get_version(request: epb.VersionRequest, context: ServiceContext) -> epb.VersionResponse:
    """Describe this server and say whether the client's protocol version is compatible."""
    compatible, message = compatibility(request.client_version)
    return epb.VersionResponse(
        version_info=pb.VersionInfo(
            protocol_version=PROTOCOL_VERSION,
            runtime_version=remotemedia.__version__,
            supported_node_types=sorted(context.registry.node_types()),
            supported_protocols=list(SUPPORTED_PROTOCOLS),
            build_timestamp="unknown",
        ),
        compatible=compatible,
        compatibility_message=message,
    )
