"""FreeNetfly: an OpenAI-compatible proxy at free.netfly.top."""

from __future__ import annotations

from typing import Any, ClassVar

from ._base import Provider


class FreeNetfly(Provider):
    """FreeNetfly (``/api/openai/v1/chat/completions``), with the web app's fixed sampling parameters."""

    label = "FreeNetfly"
    url = "https://free.netfly.top"
    chat_path = "/api/openai/v1/chat/completions"
    send_origin = True
    default_model = "gpt-3.5-turbo"
    models: ClassVar[list[str]] = ["gpt-3.5-turbo", "gpt-4"]

    @classmethod
    def _chat_fields(
        cls, model: str, messages: list[Any], stream: bool, max_tokens: int | None, temperature: float | None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": messages,
            "model": model,
            "stream": stream,
            "temperature": 0.5 if temperature is None else temperature,
            "presence_penalty": 0,
            "frequency_penalty": 0,
            "top_p": 1,
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        return body
