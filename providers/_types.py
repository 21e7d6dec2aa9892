"""What a provider yields besides text deltas: small frozen values a caller can match on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

Message: TypeAlias = Mapping[str, Any]
Messages: TypeAlias = Sequence[Message]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts the provider reported for one answer."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    @classmethod
    def from_openai(cls, data: Mapping[str, Any]) -> Usage:
        """Build from an OpenAI ``usage`` object (``prompt_tokens``, ``completion_tokens``)."""
        prompt = int(data.get("prompt_tokens") or 0)
        completion = int(data.get("completion_tokens") or 0)
        return cls(prompt, completion, int(data.get("total_tokens") or prompt + completion))

    @classmethod
    def from_vercel(cls, data: Mapping[str, Any]) -> Usage:
        """Build from a Vercel data-stream ``usage`` object (``promptTokens``, ``completionTokens``)."""
        prompt = int(data.get("promptTokens") or 0)
        completion = int(data.get("completionTokens") or 0)
        return cls(prompt, completion, prompt + completion)


@dataclass(frozen=True, slots=True)
class FinishReason:
    """Why the model stopped: ``stop``, ``length``, ``tool_calls``, ``content_filter``..."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reasoning:
    """A piece of the model's reasoning ("thinking") text, kept apart from the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class ImageResponse:
    """Generated images, as URLs or ``data:`` URIs, with the prompt that made them."""

    images: tuple[str, ...]
    prompt: str = ""
    model: str | None = field(default=None, compare=False)

    @property
    def urls(self) -> tuple[str, ...]:
        """The images that are remote URLs."""
        return tuple(image for image in self.images if not image.startswith("data:"))

    @property
    def data_uris(self) -> tuple[str, ...]:
        """The images that are inline ``data:`` URIs."""
        return tuple(image for image in self.images if image.startswith("data:"))


def image_prompt(messages: Messages) -> str:
    """The prompt of an image request: the last user message's text."""
    for message in reversed(list(messages)):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


#: One item of ``create_async_generator``: a text delta or one of the typed values above.
Chunk: TypeAlias = str | Usage | FinishReason | Reasoning | ImageResponse
