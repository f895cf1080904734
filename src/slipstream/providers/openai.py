"""Any OpenAI-compatible upstream: OpenAI, Azure OpenAI, vLLM, Ollama, Groq, Together, OpenRouter, ``slipstream sim``.

Requests go out as the client sent them (unknown fields included) with the deployment's model name. Replies and
chunks come back as the upstream's own bytes, checked to be JSON, so the gateway forwards them untouched.

Options (``deployment.options``):
- ``api_version``: Azure-style upstream: adds ``?api-version=…`` and sends the key as ``api-key``; the base URL is
  then ``https://{resource}.openai.azure.com/openai/deployments/{deployment}``.
- ``stream_usage`` (default true): ask the upstream for a final usage chunk (``stream_options.include_usage``) so
  streamed calls are counted and cached with their usage; set false for servers that reject ``stream_options``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from ..errors import UpstreamProtocolError, UpstreamStatusError
from ..types import ChatRequest, Chunk, EmbeddingsRequest, Reply
from .base import Deployment, Provider, register_provider
from .http import HttpPool, iter_sse, parse_json_object, read_json, request

__all__ = ["OpenAIProvider"]

_DONE = b"[DONE]"


@register_provider
class OpenAIProvider(Provider):
    name = "openai"
    default_base_url = "https://api.openai.com/v1"

    def __init__(self, deployment: Deployment, http: HttpPool) -> None:
        super().__init__(deployment, http)
        options = deployment.options
        self._stream_usage = bool(options.get("stream_usage", True))
        api_version = options.get("api_version")
        query = f"?api-version={api_version}" if api_version else ""
        self._chat_url = f"{self.base_url}/chat/completions{query}"
        self._embed_url = f"{self.base_url}/embeddings{query}"
        headers = {"content-type": "application/json", "accept": "application/json"}
        if deployment.api_key:
            if api_version:
                headers["api-key"] = deployment.api_key
            else:
                headers["authorization"] = f"Bearer {deployment.api_key}"
        headers.update(deployment.headers)
        self._headers = headers
        self._stream_headers = {**headers, "accept": "text/event-stream"}

    async def complete(self, request: ChatRequest) -> Reply:
        body = request.with_model(self.deployment.model)
        if body.get("stream"):
            body = {**body, "stream": False}
            body.pop("stream_options", None)
        payload = orjson.dumps(body)
        async with request_(self, self._chat_url, payload, self._headers) as response:
            raw = await response.read()
            headers = _rate_headers(response.headers)
        return Reply(data=_checked(raw, self.name), body=raw, headers=headers)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        body = dict(request.with_model(self.deployment.model))
        body["stream"] = True
        if self._stream_usage:
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        async with request_(self, self._chat_url, orjson.dumps(body), self._stream_headers) as response:
            async for event in iter_sse(response):
                data = event.data
                if data == _DONE:
                    return
                try:
                    chunk = Chunk.from_raw(data)
                except orjson.JSONDecodeError:
                    raise UpstreamProtocolError(
                        f"{self.name} sent a stream event that is not JSON", provider=self.name
                    ) from None
                error = chunk.data.get("error")
                if error is not None:
                    message = error.get("message") if isinstance(error, dict) else str(error)
                    raise UpstreamStatusError(
                        f"{self.name}: {message or 'error in stream'}",
                        upstream_status=502,
                        provider=self.name,
                    )
                yield chunk
        raise UpstreamProtocolError(f"{self.name} stream ended before [DONE]", provider=self.name)

    async def embed(self, request: EmbeddingsRequest) -> Reply:
        payload = orjson.dumps(request.with_model(self.deployment.model))
        async with request_(self, self._embed_url, payload, self._headers) as response:
            data = await read_json(response, self.name)
        return Reply(data=data)


def request_(provider: OpenAIProvider, url: str, payload: bytes, headers: dict[str, str]) -> Any:
    return request(
        provider.http,
        "POST",
        url,
        provider=provider.name,
        timeouts=provider.deployment.timeouts,
        body=payload,
        headers=headers,
    )


def _checked(raw: bytes, provider: str) -> dict[str, Any]:
    data = parse_json_object(raw, provider)
    if not isinstance(data.get("choices"), list):
        raise UpstreamProtocolError(
            f"{provider} answered with JSON that is not a chat completion", provider=provider
        )
    return data


def _rate_headers(headers: Any) -> dict[str, str] | None:
    kept = {k.lower(): v for k, v in headers.items() if k.lower().startswith("x-ratelimit-")}
    return kept or None
