"""Cloudflare's AI playground: a Vercel AI data stream behind a Cloudflare challenge."""

from __future__ import annotations

from typing import Any, ClassVar

from ._base import Decoder, Provider
from ._decode import DataStreamItemDecoder, collapse
from ._types import Chunk


class _Collapsed:
    """``stream=False`` over a streaming endpoint: collect everything, yield it joined at the end."""

    def __init__(self, inner: Decoder) -> None:
        self._inner = inner
        self._items: list[Chunk] = []

    def feed(self, chunk: bytes) -> list[Chunk]:
        self._items += self._inner.feed(chunk)
        return []

    def close(self) -> list[Chunk]:
        return collapse(self._items + self._inner.close())


class Cloudflare(Provider):
    """Cloudflare AI playground (``/api/inference``), which streams in the Vercel AI data-stream format."""

    label = "Cloudflare AI"
    url = "https://playground.ai.cloudflare.com"
    chat_path = "/api/inference"
    models_path = "/api/models"
    send_origin = True
    default_model = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
    models: ClassVar[list[str]] = [
        "@cf/meta/llama-3.3-70b-instruct-fp8-fast",
        "@cf/meta/llama-3.1-8b-instruct-awq",
        "@cf/meta/llama-3.2-1b-instruct",
        "@cf/qwen/qwen2.5-coder-32b-instruct",
        "@cf/deepseek-ai/deepseek-r1-distill-qwen-32b",
        "@cf/mistral/mistral-7b-instruct-v0.2",
    ]
    model_aliases: ClassVar[dict[str, str]] = {
        "llama-3.3-70b": "@cf/meta/llama-3.3-70b-instruct-fp8-fast",
        "llama-3.1-8b": "@cf/meta/llama-3.1-8b-instruct-awq",
        "llama-3.2-1b": "@cf/meta/llama-3.2-1b-instruct",
        "qwen-2.5-coder": "@cf/qwen/qwen2.5-coder-32b-instruct",
        "deepseek-r1-qwen-32b": "@cf/deepseek-ai/deepseek-r1-distill-qwen-32b",
        "mistral-7b": "@cf/mistral/mistral-7b-instruct-v0.2",
    }

    @classmethod
    def _chat_fields(
        cls, model: str, messages: list[Any], stream: bool, max_tokens: int | None, temperature: float | None
    ) -> dict[str, Any]:
        # The playground always streams; stream=False is handled by collecting (see `_decoder`).
        body: dict[str, Any] = {
            "messages": messages,
            "lora": None,
            "model": model,
            "max_tokens": max_tokens or 2048,
            "stream": True,
            "system_message": "You are a helpful assistant",
            "tools": [],
        }
        if temperature is not None:
            body["temperature"] = temperature
        return body

    @classmethod
    def _decoder(cls, stream: bool, content_type: str) -> Decoder:
        decoder = DataStreamItemDecoder(cls.name())
        return decoder if stream else _Collapsed(decoder)

    @classmethod
    def _parse_models(cls, data: Any) -> tuple[list[str], list[str]]:
        return [str(model["name"]) for model in data], []
