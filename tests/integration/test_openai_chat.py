"""OpenAIChatNode and the coordinator's 'openai' responder against a local fake endpoint.

The endpoint is a real HTTP server on a loopback socket that speaks the
chat-completions streaming protocol (server-sent events), so the node's real httpx
client, headers, body and stream parsing are what is tested.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from remotemedia import Json, Text
from remotemedia.manifest import manifest_from_dict
from remotemedia.nodes import builtin_registry
from remotemedia.session import compile_graph, open_session

pytest.importorskip("httpx", reason="needs remotemedia[chat]")


class FakeChatEndpoint:
    """Answers POST /v1/chat/completions with the reply, a word per SSE event."""

    def __init__(self, reply: str, status: int = 200) -> None:
        self.reply, self.status = reply, status
        self.requests: list[tuple[dict[str, str], dict[str, Any]]] = []

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode().split("\r\n")
            headers = {
                k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])
            }
            while len(body) < int(headers["content-length"]):
                body += await stream.receive_some(65536)
            self.requests.append((headers, json.loads(body)))
            if self.status != 200:
                message = b'{"error": {"message": "model overloaded"}}'
                await stream.send_all(
                    b"HTTP/1.1 %d Oops\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                    % (self.status, len(message), message)
                )
                return
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
            )
            await stream.send_all(b": keep-alive comment\n\n")
            for word in self.reply.split(" "):
                event = {"choices": [{"delta": {"content": word + " "}}]}
                await stream.send_all(f"data: {json.dumps(event)}\n\n".encode())
                await trio.sleep(0.01)
            await stream.send_all(b"data: [DONE]\n\n")


async def serving(endpoint: FakeChatEndpoint, nursery: trio.Nursery) -> str:
    serve = functools.partial(trio.serve_tcp, endpoint.handle, 0, host="127.0.0.1")
    (listener,) = await nursery.start(serve)
    return f"http://127.0.0.1:{listener.socket.getsockname()[1]}/v1"


def chat_graph(**params: Any) -> Any:
    manifest = manifest_from_dict(
        {
            "version": "v1",
            "metadata": {"name": "chat"},
            "nodes": [{"id": "chat", "node_type": "OpenAIChatNode", "params": params}],
        }
    )
    return compile_graph(manifest, builtin_registry())


async def conversation(inputs: list[str], **params: Any) -> AsyncIterator[Any]:
    registry = builtin_registry()
    async with open_session(chat_graph(**params), registry) as session:
        for text in inputs:
            await session.send(Text(text))
        await session.send_eof()
        async for result in session:
            yield result


async def test_the_node_streams_the_reply_and_sends_the_history_with_the_servers_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint = FakeChatEndpoint("Paris is sunny tomorrow.")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            monkeypatch.setenv("REMOTEMEDIA_OPENAI_BASE_URL", await serving(endpoint, nursery))
            monkeypatch.setenv("REMOTEMEDIA_OPENAI_API_KEY", "sk-server-side")
            results = [
                r
                async for r in conversation(
                    ["Weather in Paris?", "And in London?"], model="tiny-chat", history_turns=4
                )
            ]
            nursery.cancel_scope.cancel()
    texts = [r.data.text for r in results]
    assert texts == ["Paris ", "is ", "sunny ", "tomorrow. ", "<|text_end|>"] * 2
    (first_headers, first), (_, second) = endpoint.requests
    assert first_headers["authorization"] == "Bearer sk-server-side"
    assert first["model"] == "tiny-chat"
    assert first["stream"] is True
    assert [m["role"] for m in first["messages"]] == ["system", "user"]
    assert second["messages"][1:] == [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "Paris is sunny tomorrow. "},
        {"role": "user", "content": "And in London?"},
    ]


async def test_an_endpoint_error_is_reported_for_that_input_and_the_session_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endpoint = FakeChatEndpoint("unused", status=503)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            monkeypatch.setenv("REMOTEMEDIA_OPENAI_BASE_URL", await serving(endpoint, nursery))
            monkeypatch.delenv("REMOTEMEDIA_OPENAI_API_KEY", raising=False)
            monkeypatch.delenv("OPENAI_API_KEY", raising=False)
            results = [r async for r in conversation(["one", "two"])]
            nursery.cancel_scope.cancel()
    errors = [str(r.error) for r in results if r.error is not None]
    assert len(errors) == 2
    assert "answered 503" in errors[0]
    assert "model overloaded" in errors[0]
    assert "authorization" not in endpoint.requests[0][0]  # no key: none sent


async def test_the_coordinator_speaks_the_chat_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("piper", reason="needs remotemedia[piper]")
    endpoint = FakeChatEndpoint("It will rain in London. Take an umbrella.")
    manifest = manifest_from_dict(
        {
            "version": "v1",
            "metadata": {"name": "chat"},
            "nodes": [
                {
                    "id": "coordinator",
                    "node_type": "ConversationCoordinatorNode",
                    "params": {"responder": "openai", "model": "tiny-chat"},
                }
            ],
        }
    )
    registry = builtin_registry()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            monkeypatch.setenv("REMOTEMEDIA_OPENAI_BASE_URL", await serving(endpoint, nursery))
            async with open_session(compile_graph(manifest, registry), registry) as session:
                await session.send(Json({"text": "Weather in London?"}))
                await session.send_eof()
                values = [
                    r.data.value for r in [r async for r in session] if isinstance(r.data, Json)
                ]
            nursery.cancel_scope.cancel()
    replies = [v["reply"] for v in values if "turn" in v and "reply" in v]
    assert replies == ["It will rain in London.", "Take an umbrella."]
    (done,) = [v for v in values if "turn_done" in v]
    assert done["reply"] == "It will rain in London. Take an umbrella."
    assert done["spoken_ms"] > 1000
