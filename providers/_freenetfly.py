"""FreeNetfly: an OpenAI-compatible proxy at free.netfly.top."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ._base import Provider
from ._types import Messages


class FreeNetfly(Provider):
    """FreeNetfly (``/api/openai/v1/chat/completions``), with the web app's fixed sampling parameters."""

    label = "FreeNetfly"
    url = "https://free.netfly.top"
    chat_path = "/api/openai/v1/chat/completions"
    send_origin = True
    default_model = "gpt-3.5-turbo"
    models: ClassVar[list[str]] = ["gpt-3.5-turbo", "gpt-4"]

    @classmethod
    def _chat_body(
        cls,
        model: str,
        messages: Messages,
        stream: bool,
        max_tokens: int | None,
        temperature: float | None,
        extra_body: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "messages": list(messages),
            "model": model,
            "stream": stream,
            "temperature": 0.5 if temperature is None else temperature,
            "presence_penalty": 0,
            "frequency_penalty": 0,
            "top_p": 1,
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if extra_body:
            body.update(extra_body)
        return body
