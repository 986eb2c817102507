"""LFM2TextNode in a worker with its own environment, and as the conversation's responder.

A tiny random Lfm2ForCausalLM built in the tests: it says nothing sensible, so the
tests check what it can show (streaming, the history it is given, stopping, the
worker's lifecycle), and that ``converse`` runs on it end to end.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from tests.e2e.conftest import (
    ServerFactory,
    chunk,
    init,
    kind,
    manifest,
    raw_stream,
    start_server,
    text_buffer,
)

from remotemedia.config import NodeDefaults
from remotemedia.environments import Environment
from remotemedia.executors.process import (
    ProcessNode,
    WorkerSettings,
    default_namespace,
    new_session_id,
)
from remotemedia.media import Json, Text
from remotemedia.nodes.transformers import LFM2TextNode, LFM2TextParams

__all__ = ["start_server"]

pytestmark = pytest.mark.slow

TIMEOUT = 120.0


def chat_node(environment: Environment, model: Path, **params: Any) -> ProcessNode:
    chat = LFM2TextParams(model=str(model), **params)
    return ProcessNode(
        "chat",
        chat,
        node_class=LFM2TextNode,
        raw_params=attrs.asdict(chat),
        session_id=new_session_id(),
        settings=WorkerSettings(default_namespace()),
        environment=environment,
    )


async def reply(node: ProcessNode, data: Any, limit: int | None = None) -> list[dict[str, Any]]:
    """The node's results for one turn (the first ``limit``; the rest abandoned)."""
    values = []
    async with contextlib.aclosing(node.process(data)) as outputs:
        async for item in outputs:
            assert isinstance(item, Json)
            values.append(item.value)
            if limit is not None and len(values) == limit:
                break
    return values


async def test_a_reply_streams_and_the_history_grows_until_reset(
    torch_environment: Environment, tiny_models: Path
) -> None:
    node = chat_node(torch_environment, tiny_models / "lfm2", max_new_tokens=8, temperature=0.0)
    with trio.fail_after(TIMEOUT):
        try:
            await node.initialize()
            first = await reply(node, Text("hello there"))
            *pieces, final = first
            assert len(pieces) >= 3
            assert all(p["interim"] is True for p in pieces)
            assert final["final"] is True
            assert final["text"] == "".join(p["text"] for p in pieces)
            assert (final["history_turns"], final["stopped"]) == (0, False)
            second = await reply(node, Text("and again"))
            assert second[-1]["history_turns"] == 1  # the first exchange was kept
            assert await reply(node, Json({"reset": True})) == [{"reset": True}]
            third = await reply(node, Text("hello there"))
            assert third[-1]["history_turns"] == 0
            assert third == first  # greedy, the same conversation: the same reply
            # A caller's own history replaces the node's.
            given = [{"user": "a", "reply": "b"}, {"user": "c", "reply": "d"}]
            told = await reply(node, Json({"text": "e", "history": given}))
            assert told[-1]["history_turns"] == 2
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await node.cleanup()
    assert "torch" not in sys.modules


async def test_a_cut_reply_stops_generating_and_is_kept_as_far_as_it_went(
    torch_environment: Environment, tiny_models: Path
) -> None:
    node = chat_node(torch_environment, tiny_models / "lfm2", max_new_tokens=8000)
    with trio.fail_after(TIMEOUT):
        try:
            await node.initialize()
            pid = node.pid
            cut = await reply(node, Text("tell me everything"), limit=4)
            started = trio.current_time()
            # The next turn's first piece waits for the cut one to stop, not to finish.
            assert len(await reply(node, Text("stop"), limit=1)) == 1
            assert trio.current_time() - started < 2.0
            assert (node.pid, node.restarts, node.counts["abandoned_input"]) == (pid, 0, 1)
            assert len(cut) == 4
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await node.cleanup()


async def test_converse_replies_with_a_local_model_spoken_by_piper(
    start_server: ServerFactory, model_node_config: dict[str, NodeDefaults], tiny_models: Path
) -> None:
    pytest.importorskip("piper", reason="needs remotemedia[piper]")
    config = {
        **model_node_config,
        "ConversationCoordinatorNode": NodeDefaults(
            params={"lfm2_model": str(tiny_models / "lfm2")}
        ),
    }
    coordinator = ("talk", "ConversationCoordinatorNode", {"responder": "lfm2"})
    with trio.fail_after(TIMEOUT):
        address = await start_server(node_config=config)
        replies: list[str] = []
        audio = 0
        async with raw_stream(address) as stream:
            await stream.open_session(init(manifest([coordinator])))
            await stream.send(chunk(text_buffer("hello there"), 0, node_id="talk"))
            while True:
                response = await stream.recv()
                assert response is not None
                assert kind(response) == "result", response
                output = response.result.data_outputs["talk"]
                if output.WhichOneof("data_type") == "audio":
                    audio += output.audio.num_samples
                    continue
                value = json.loads(output.json.json_payload)
                if "reply" in value and "turn" in value and "turn_done" not in value:
                    replies.append(value["reply"])
                if "turn_done" in value:
                    break
                assert "error" not in value, value
            await stream.end()
            await stream.recv_all()
            await stream.finish()
    assert replies  # the local model's words, sentence by sentence
    assert all(r.strip() for r in replies)
    assert audio > 0  # and Piper spoke them
    assert "torch" not in sys.modules
