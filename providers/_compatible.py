"""Any OpenAI-compatible API: a base URL and a key, no browser session."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from ._base import Provider


class OpenAICompatible(Provider):
    """Any OpenAI-compatible endpoint: ``base_url`` (``.../v1``) plus ``api_key``; nothing is harvested."""

    label = "OpenAI-compatible"
    url = ""
    uses_session = False
    chat_path = "/chat/completions"
    models_path = "/models"
    models: ClassVar[list[str]] = []

    @classmethod
    def get_model(cls, model: str | None, *, live: Iterable[str] = ()) -> str:
        """Any name is passed through: the server knows its own models."""
        if not model:
            raise ValueError("OpenAICompatible needs a model name")
        return model

    @classmethod
    def _origins(cls, base_url: str | None) -> tuple[str, str, str | None]:
        base = base_url
        if not base:
            raise ValueError("OpenAICompatible needs base_url (or HARVEST_OPENAICOMPATIBLE_BASE_URL)")
        base = base.rstrip("/")
        return base, base, base
