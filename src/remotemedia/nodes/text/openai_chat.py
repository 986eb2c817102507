"""``OpenAIChatNode``: replies from an OpenAI-compatible chat endpoint, streamed as they come.

Needs ``pip install 'remotemedia[chat]'`` (httpx). The endpoint and the key are the
server's, never the client's: they come from the server's environment,
``REMOTEMEDIA_OPENAI_BASE_URL`` (default ``https://api.openai.com/v1``; any
OpenAI-compatible server, such as a local llama.cpp or vLLM, works) and
``REMOTEMEDIA_OPENAI_API_KEY`` (or the usual ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``).
A manifest can choose the model, the system prompt and how many earlier turns are
sent, but cannot point a server at another host or read its key.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from typing import Any

import attrs

from remotemedia.errors import ModelNotFoundError, UpstreamError
from remotemedia.media import RuntimeData, Text
from remotemedia.nodes.base import Node
from remotemedia.nodes.conversation.responders import Exchange
from remotemedia.params import param

__all__ = ["OpenAIChat", "OpenAIChatNode", "OpenAIChatParams", "endpoint_from_environment"]

INSTALL = "python3 -m pip install 'remotemedia[chat]'"
DEFAULT_BASE_URL = "https://api.openai.com/v1"


@attrs.frozen
class OpenAIChatParams:
    """Parameters of :class:`OpenAIChatNode` (the endpoint and key are the server's)."""

    model: str = param("gpt-4o-mini", doc="The model name the endpoint knows.")
    system_prompt: str = param(
        "You are a helpful voice assistant. Answer in one or two short spoken sentences.",
        doc="The system message.",
    )
    history_turns: int = param(10, doc="Earlier turns sent with each request.", ge=0, le=100)
    temperature: float = param(0.7, doc="Sampling temperature.", ge=0.0, le=2.0)
    max_tokens: int = param(256, doc="Longest reply, in tokens.", ge=1, le=32_768)
    timeout_s: float = param(30.0, doc="Give up on a request after this long.", gt=0, le=600)


def endpoint_from_environment(environ: Mapping[str, str] = os.environ) -> tuple[str, str | None]:
    """The chat endpoint's base URL and key, from the server's environment."""
    base = environ.get("REMOTEMEDIA_OPENAI_BASE_URL") or environ.get("OPENAI_BASE_URL")
    key = environ.get("REMOTEMEDIA_OPENAI_API_KEY") or environ.get("OPENAI_API_KEY")
    return (base or DEFAULT_BASE_URL).rstrip("/"), key or None


class OpenAIChat:
    """A streaming client of ``POST {base_url}/chat/completions`` (a responder).

    Args:
        params: Model, prompt and limits.
        base_url: The endpoint, e.g. ``https://api.openai.com/v1``.
        api_key: Sent as a bearer token when set.
        transport: An httpx transport (tests pass a mock one; default: the network).
    """

    def __init__(
        self,
        params: OpenAIChatParams,
        base_url: str,
        api_key: str | None,
        transport: Any = None,
    ) -> None:
        import httpx

        self.params = params
        self._url = f"{base_url}/chat/completions"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers, timeout=params.timeout_s, transport=transport
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    def messages(self, text: str, history: Sequence[Exchange]) -> list[dict[str, str]]:
        """The request's messages: the system prompt, the last turns, then ``text``."""
        messages = [{"role": "system", "content": self.params.system_prompt}]
        turns = self.params.history_turns
        for exchange in list(history)[-turns:] if turns else []:
            messages.append({"role": "user", "content": exchange.user})
            if exchange.reply:
                cut = " (interrupted by the user)" if exchange.interrupted else ""
                messages.append({"role": "assistant", "content": exchange.reply + cut})
        messages.append({"role": "user", "content": text})
        return messages

    async def reply(self, text: str, history: Sequence[Exchange]) -> AsyncGenerator[str, None]:
        """Stream the reply's text as the endpoint sends it."""
        import httpx

        body = {
            "model": self.params.model,
            "messages": self.messages(text, history),
            "temperature": self.params.temperature,
            "max_tokens": self.params.max_tokens,
            "stream": True,
        }
        try:
            async with self._client.stream("POST", self._url, json=body) as response:
                if response.status_code != 200:
                    detail = (await response.aread()).decode(errors="replace")[:300]
                    raise UpstreamError(
                        f"The chat endpoint {self._url} answered {response.status_code}: {detail}"
                    )
                done = False
                # Read to the end even after [DONE]: httpx's stream iterators must be
                # exhausted (or closed by the context) to be cleaned up in order.
                async for line in response.aiter_lines():
                    if done or not line.startswith("data:"):
                        continue  # SSE comments and blank lines
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        done = True
                        continue
                    delta = _content(payload, self._url)
                    if delta:
                        yield delta
        except httpx.HTTPError as exc:
            raise UpstreamError(f"The chat endpoint {self._url} failed: {exc!r}") from exc


def _content(payload: str, url: str) -> str:
    try:
        chunk = json.loads(payload)
        choices = chunk.get("choices") or [{}]
        return str(choices[0].get("delta", {}).get("content") or "")
    except (ValueError, AttributeError, TypeError) as exc:
        raise UpstreamError(
            f"The chat endpoint {url} sent a malformed event: {payload[:200]!r}"
        ) from exc


class OpenAIChatNode(Node[OpenAIChatParams]):
    """Reply to each text with an OpenAI-compatible chat model, streaming the reply's pieces.

    Keeps the conversation (``history_turns``) per session. Emits Text pieces as they
    arrive, then ``<|text_end|>`` (a TextCollectorNode after it makes sentences).
    """

    node_type = "OpenAIChatNode"
    Params = OpenAIChatParams
    accepts = frozenset({"text"})
    produces = frozenset({"text"})

    def __init__(self, node_id: str, params: OpenAIChatParams) -> None:
        super().__init__(node_id, params)
        self.chat: OpenAIChat | None = None
        self.history: deque[Exchange] = deque(maxlen=max(params.history_turns, 1))

    @classmethod
    def unavailable(cls) -> str | None:
        """Why the node cannot run here (None when it can)."""
        if importlib.util.find_spec("httpx") is None:
            return f"needs httpx: {INSTALL}"
        return None

    async def initialize(self) -> None:
        """Open the HTTP client for the server's endpoint."""
        if (reason := self.unavailable()) is not None:
            raise ModelNotFoundError(f"OpenAIChatNode {reason}")
        self.chat = OpenAIChat(self.params, *endpoint_from_environment())

    async def cleanup(self) -> None:
        """Close the HTTP client."""
        if self.chat is not None:
            await self.chat.aclose()

    async def process(self, data: RuntimeData) -> AsyncIterator[RuntimeData]:
        """Stream the reply to one text."""
        if not isinstance(data, Text) or not data.text.strip():
            return
        assert self.chat is not None
        pieces = []
        async for piece in self.chat.reply(data.text, self.history):
            pieces.append(piece)
            yield Text(piece)
        self.history.append(Exchange(data.text, "".join(pieces)))
        yield Text("<|text_end|>")
