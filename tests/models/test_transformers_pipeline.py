"""TransformersPipelineNode over real gRPC, in worker processes with their own environment.

A real model (all-MiniLM-L6-v2, from a PyPI wheel) for what a model can show by its
answers, and tiny random models built in the tests for the rest: rates, types,
streaming, cancellation, the worker's lifecycle.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import trio
from tests.e2e.conftest import (
    ServerFactory,
    assert_serves,
    audio_buffer,
    chunk,
    expect_stream_error,
    init,
    kind,
    manifest,
    raw_stream,
    start_server,
    text_buffer,
)
from tests.processes import worker_pids

from remotemedia.config import NodeDefaults
from remotemedia.environments import Environment
from remotemedia.executors.process import (
    ProcessNode,
    WorkerSettings,
    default_namespace,
    new_session_id,
)
from remotemedia.media import Json, Text
from remotemedia.nodes.transformers import TransformersPipelineNode, TransformersPipelineParams
from remotemedia.v1 import common_pb2 as pb

__all__ = ["start_server"]

pytestmark = pytest.mark.slow

TIMEOUT = 120.0  # a worker imports torch and transformers (seconds) before it is ready


def with_params(config: dict[str, NodeDefaults], **params: Any) -> dict[str, NodeDefaults]:
    """The node config with these params for TransformersPipelineNode."""
    base = config["TransformersPipelineNode"]
    return {
        **config,
        "TransformersPipelineNode": NodeDefaults(
            params=params, python=base.python, requirements=base.requirements
        ),
    }


async def session_results(
    address: Any, node_params: dict[str, Any], buffers: list[pb.DataBuffer]
) -> list[list[Any]]:
    """Send each buffer to one TransformersPipelineNode; its results per input."""
    per_input: list[list[Any]] = []
    async with raw_stream(address) as stream:
        await stream.open_session(init(manifest([("hf", "TransformersPipelineNode", node_params)])))
        for sequence, buffer in enumerate(buffers):
            await stream.send(chunk(buffer, sequence, node_id="hf"))
        await stream.end()
        for response in await stream.recv_all():
            if kind(response) != "result" or "hf" not in response.result.data_outputs:
                continue
            sequence = response.result.sequence
            while len(per_input) <= sequence:
                per_input.append([])
            per_input[sequence].append(_value(response.result.data_outputs["hf"]))
        await stream.finish()
    return per_input


def _value(buffer: pb.DataBuffer) -> Any:
    which = buffer.WhichOneof("data_type")
    if which == "json":
        return json.loads(buffer.json.json_payload)
    if which == "text":
        return buffer.text.text_data.decode()
    if which == "audio":
        return ("audio", buffer.audio.sample_rate, buffer.audio.num_samples)
    raise AssertionError(f"unexpected {which}")


async def test_a_real_embedding_model_scores_a_paraphrase_far_closer_than_an_unrelated_sentence(
    start_server: ServerFactory, model_node_config: dict[str, NodeDefaults], minilm_model: Path
) -> None:
    config = with_params(model_node_config, task="feature-extraction", model=str(minilm_model))
    sentences = [
        "A man is playing a guitar on stage.",
        "Someone performs music with a guitar in front of an audience.",
        "The stock market fell sharply this morning.",
    ]
    with trio.fail_after(TIMEOUT):
        address = await start_server(node_config=config)
        results = await session_results(address, {}, [text_buffer(s) for s in sentences])
    vectors = [np.asarray(r[0]["embedding"]) for r in results]
    assert [v.shape for v in vectors] == [(384,)] * 3  # MiniLM-L6's width
    paraphrase, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert paraphrase > 0.6
    assert unrelated < 0.2
    assert "torch" not in sys.modules  # the server process never imported it
    assert "transformers" not in sys.modules


async def test_text_generation_streams_pieces_then_the_whole_reply(
    start_server: ServerFactory, model_node_config: dict[str, NodeDefaults], tiny_models: Path
) -> None:
    config = with_params(model_node_config, task="text-generation", model=str(tiny_models / "lfm2"))
    with trio.fail_after(TIMEOUT):
        address = await start_server(node_config=config)
        [results] = await session_results(
            address, {"pipeline_kwargs": {"max_new_tokens": 12}}, [text_buffer("hello there")]
        )
    *interim, final = results
    assert len(interim) >= 3  # several results before the last
    assert all(r["interim"] is True and r["text"] for r in interim)
    assert final["final"] is True
    assert final["text"] == "".join(r["text"] for r in interim)
    assert final["pieces"] == len(interim)


@pytest.mark.parametrize("model", ["wav2vec2", "whisper"])
async def test_speech_recognition_takes_audio_at_any_rate_and_answers_text(
    start_server: ServerFactory,
    model_node_config: dict[str, NodeDefaults],
    tiny_models: Path,
    model: str,
) -> None:
    config = with_params(
        model_node_config, task="automatic-speech-recognition", model=str(tiny_models / model)
    )
    rng = np.random.default_rng(7)
    stereo_48k = (rng.standard_normal(2 * 48_000) * 0.1).astype(np.float32)
    mono_8k = (rng.standard_normal(8_000) * 0.1).astype(np.float32)
    with trio.fail_after(TIMEOUT):
        address = await start_server(node_config=config)
        results = await session_results(
            address,
            {},
            [
                audio_buffer(stereo_48k, sample_rate=48_000, channels=2),
                audio_buffer(mono_8k, sample_rate=8_000),
            ],
        )
    # A random model says nothing sensible, but says it as one text per input.
    assert [len(r) for r in results] == [1, 1]
    assert all(isinstance(r[0], str) for r in results)


async def test_a_text_task_refuses_audio_with_an_error_naming_the_task(
    start_server: ServerFactory, model_node_config: dict[str, NodeDefaults], minilm_model: Path
) -> None:
    config = with_params(model_node_config, task="feature-extraction", model=str(minilm_model))
    with trio.fail_after(TIMEOUT):
        address = await start_server(node_config=config)
        await expect_stream_error(
            address,
            [
                init(manifest([("hf", "TransformersPipelineNode", {})])),
                chunk(audio_buffer(np.zeros(160, np.float32)), 0, node_id="hf"),
            ],
            pb.ERROR_TYPE_NODE_EXECUTION,
            "Node 'hf' (TransformersPipelineNode)",
            "feature-extraction takes text or JSON, got Audio",
        )


async def test_clients_may_not_choose_the_model_folder_nor_run_its_code(
    start_server: ServerFactory,
) -> None:
    address = await start_server()
    await expect_stream_error(
        address,
        [init(manifest([("hf", "TransformersPipelineNode", {"task": "x", "model": "/etc"})]))],
        pb.ERROR_TYPE_VALIDATION,
        "$.nodes[0].params.model",
        "--allow-client-paths",
    )
    await expect_stream_error(
        address,
        [
            init(
                manifest(
                    [("hf", "TransformersPipelineNode", {"task": "x", "trust_remote_code": True})]
                )
            )
        ],
        pb.ERROR_TYPE_VALIDATION,
        "$.nodes[0].params.trust_remote_code",
        "never by a client",
    )
    await expect_stream_error(
        address,
        [init(manifest([("hf", "PassThrough", {"__python_deps__": ["evil"]})]))],
        pb.ERROR_TYPE_VALIDATION,
        "install packages",
    )
    await assert_serves(address)


def generator_node(environment: Environment, tiny_models: Path, max_new_tokens: int) -> ProcessNode:
    params = TransformersPipelineParams(
        task="text-generation",
        model=str(tiny_models / "lfm2"),
        pipeline_kwargs={"max_new_tokens": max_new_tokens},
    )
    return ProcessNode(
        "hf",
        params,
        node_class=TransformersPipelineNode,
        raw_params=attrs.asdict(params),
        session_id=new_session_id(),
        settings=WorkerSettings(
            default_namespace(), node_environments={"TransformersPipelineNode": environment}
        ),
        environment=environment,
    )


async def test_generation_stops_within_a_second_when_its_input_is_abandoned(
    torch_environment: Environment, torch_python: Path, tiny_models: Path
) -> None:
    node = generator_node(torch_environment, tiny_models, max_new_tokens=20_000)
    with trio.fail_after(TIMEOUT):
        try:
            await node.initialize()
            pid = node.pid
            pieces = await first_pieces(node, "hello", 5)  # then a barge-in cuts it
            cut = trio.current_time()
            # The next input's first piece waits only for the first generation to see
            # the stop, not for the rest of its 20,000 tokens.
            assert len(await first_pieces(node, "again", 1)) == 1
            assert trio.current_time() - cut < 2.0
            assert (node.pid, node.restarts) == (pid, 0)
            assert node.counts["abandoned_input"] == 1
            assert all(isinstance(p, Json) and p.value.get("interim") for p in pieces)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await node.cleanup()


async def first_pieces(node: ProcessNode, text: str, count: int) -> list[Any]:
    """The first ``count`` outputs of an input; the rest is abandoned."""
    pieces = []
    async with contextlib.aclosing(node.process(Text(text))) as outputs:
        async for item in outputs:
            pieces.append(item)
            if len(pieces) == count:
                break
    return pieces


async def test_a_killed_model_worker_is_a_typed_error_and_the_next_input_gets_a_new_one(
    start_server: ServerFactory, model_node_config: dict[str, NodeDefaults], minilm_model: Path
) -> None:
    config = with_params(model_node_config, task="feature-extraction", model=str(minilm_model))
    with trio.fail_after(TIMEOUT):
        address = await start_server(node_config=config)
        async with raw_stream(address) as stream:
            await stream.open_session(init(manifest([("hf", "TransformersPipelineNode", {})])))
            await stream.send(chunk(text_buffer("one"), 0, node_id="hf"))
            first = await stream.recv()
            assert first is not None
            assert kind(first) == "result"
            [pid] = worker_pids()
            os.kill(pid, signal.SIGKILL)
            await stream.send(chunk(text_buffer("two"), 1, node_id="hf"))
            second = await stream.recv()
            assert second is not None
            assert kind(second) == "error", second
            assert "worker" in second.error.message
            await stream.send(chunk(text_buffer("three"), 2, node_id="hf"))
            third = await stream.recv()
            assert third is not None
            assert kind(third) == "result", third
            assert worker_pids() != {pid}
            await stream.end()
            await stream.recv_all()
            await stream.finish()
