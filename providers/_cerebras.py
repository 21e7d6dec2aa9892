"""Cerebras Inference: an OpenAI API whose demo key comes from the web app's session endpoint."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import orjson

from ._base import Provider
from ._exceptions import MissingAuthError
from ._refresh import harvest_command

if TYPE_CHECKING:
    from cache import SessionRecord

    from ._client import Call


class Cerebras(Provider):
    """Cerebras Inference (``/v1/chat/completions``); the key: argument, else the record's, else the session's."""

    label = "Cerebras Inference"
    url = "https://inference.cerebras.ai"
    api_base = "https://api.cerebras.ai"
    session_path = "/api/auth/session"
    default_model = "llama3.1-70b"
    models: ClassVar[list[str]] = ["llama3.1-70b", "llama3.1-8b", "llama-3.3-70b", "deepseek-r1-distill-llama-70b"]
    model_aliases: ClassVar[dict[str, str]] = {
        "llama-3.1-70b": "llama3.1-70b",
        "llama-3.1-8b": "llama3.1-8b",
        "deepseek-r1": "deepseek-r1-distill-llama-70b",
    }

    @classmethod
    async def _prepare(cls, call: Call) -> None:
        """Fetch the demo API key from ``/api/auth/session`` with the session's cookies, when none is known."""
        if call.identity.api_key:
            return
        request = cls._request(call, "GET", call.url(cls.session_path, api=False))
        response = await call.send(request)
        body = await response.aread()
        await response.aclose()
        try:
            data = orjson.loads(body)
            key = data["user"]["demoApiKey"] if isinstance(data, dict) and data else None
        except (orjson.JSONDecodeError, KeyError, TypeError):
            key = None
        if not key:
            raise MissingAuthError(
                f"cerebras: the session has no API key (not logged in?); "
                f"run `{harvest_command(cls.name(), base_url=call.rebased, headful=True)}` and log in",
                provider=cls.name(),
            )
        call.identity.api_key = key
        record = call.identity.record
        if record is not None:
            # Keep the key with the record it belongs to, so the next call skips this round trip.
            def remember(current: SessionRecord | None) -> SessionRecord | None:
                if current is None or current.harvested_at != record.harvested_at:
                    return current
                return current.replace(api_key=key)

            call.remember(remember)
