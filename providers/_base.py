"""The OpenAI-style provider description: endpoints, models, request bodies and decoders, plus the classmethods.

A provider subclass declares its endpoints and models as class attributes and overrides a hook or two
(``_chat_fields``, ``_decoder``, ``_prepare``, the image hooks); the I/O is the ``Client``'s
(``providers._client``). The classmethods (``create_async_generator``, ``get_models``...) are thin wrappers
over the running loop's default client for their settings (``providers._default``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import orjson

from cache._origin import normalize_origin

from ._decode import OpenAIStreamDecoder, completion_items
from ._default import default_client
from ._exceptions import ModelNotFoundError, ProviderError
from ._transport import Request
from ._types import Chunk, ImageResponse, Messages

if TYPE_CHECKING:
    from cache import AuthCache

    from ._client import Call, Client


class Decoder(Protocol):
    """Turns response bytes into items: ``feed`` per network chunk, ``close`` at the end."""

    def feed(self, chunk: bytes) -> list[Chunk]: ...

    def close(self) -> list[Chunk]: ...


class JSONCompletionDecoder:
    """A non-streamed ``chat.completion`` body: collected whole, decoded at the end."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self._chunks: list[bytes] = []

    def feed(self, chunk: bytes) -> list[Chunk]:
        self._chunks.append(chunk)
        return []

    def close(self) -> list[Chunk]:
        return completion_items(b"".join(self._chunks), self.provider)


class Provider:
    """Base of the provider descriptions: an OpenAI-style chat API behind a harvested browser session."""

    label: ClassVar[str] = ""
    #: The site origin: where the session is harvested (and, unless ``api_base`` says otherwise, the API).
    url: ClassVar[str] = ""
    api_base: ClassVar[str | None] = None
    default_model: ClassVar[str] = ""
    models: ClassVar[list[str]] = []
    model_aliases: ClassVar[dict[str, str]] = {}
    image_models: ClassVar[list[str]] = []
    default_image_model: ClassVar[str | None] = None

    chat_path: ClassVar[str] = "/v1/chat/completions"
    models_path: ClassVar[str | None] = None
    #: Extra headers every API request sends (Origin, Referer...).
    headers: ClassVar[dict[str, str]] = {}
    #: Whether calls use (and heal) the harvested session in the cache.
    uses_session: ClassVar[bool] = True
    #: Send ``Origin`` and ``Referer`` of the site, as the provider's own web page does.
    send_origin: ClassVar[bool] = False

    # -- names --------------------------------------------------------------------------------------------

    @classmethod
    def name(cls) -> str:
        """The provider's name in the cache and on the command line (``cerebras``)."""
        return cls.__name__.lower()

    @classmethod
    def get_model(cls, model: str | None, *, live: Iterable[str] = ()) -> str:
        """Resolve an alias to the provider's model name; empty means the default model.

        Args:
            live: model names the provider's live list holds besides the built-in ones.

        Raises:
            ModelNotFoundError: neither a known model nor an alias; the error lists the closest names.
        """
        if not model:
            return cls.default_model
        if model in cls.model_aliases:
            return cls.model_aliases[model]
        if model == cls.default_model or model in cls.models:
            return model
        known = [m for m in dict.fromkeys([cls.default_model, *cls.models, *cls.image_models, *live]) if m]
        if model in known:
            return model
        raise ModelNotFoundError(model, [*known, *cls.model_aliases], provider=cls.name())

    @classmethod
    def is_image_model(cls, model: str) -> bool:
        """True for a built-in image model (a ``Client`` also knows its live ones)."""
        return model in cls.image_models

    # -- the classmethod API: thin wrappers over the loop's default client -----------------------------------

    @classmethod
    def client(cls, *, cache: AuthCache | None = None, base_url: str | None = None, proxy: str | None = None) -> Client:
        """The running loop's default client for these settings (shared transport; closed by ``close_transport``).

        Raises:
            RuntimeError: no event loop is running.
        """
        client = default_client(cls, cache=cache, base_url=base_url, proxy=proxy)
        if client is None:
            raise RuntimeError(f"{cls.__name__}.client() needs a running event loop")
        return client

    @classmethod
    def create_async_generator(
        cls,
        model: str,
        messages: Messages,
        stream: bool = True,
        proxy: str | None = None,
        timeout: float = 120,
        max_tokens: int | None = None,
        temperature: float | None = None,
        api_key: str | None = None,
        cookies: Mapping[str, str] | None = None,
        base_url: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
        *,
        cache: AuthCache | None = None,
        protocol: str | None = None,
    ) -> AsyncIterator[Chunk]:
        """Send a chat and yield ``str`` deltas plus ``Reasoning``, ``FinishReason``, ``Usage`` (or an ``ImageResponse``).

        ``stream=False`` asks for one answer and yields the same types. ``extra_body`` is merged into the
        request JSON; ``base_url`` (or ``HARVEST_<PROVIDER>_BASE_URL``) rebases every endpoint onto one origin.
        The same as ``Client.chat`` on the loop's default client for ``cache``, ``base_url`` and ``proxy``.

        Raises:
            ModelNotFoundError, MissingAuthError, ResponseStatusError, StreamError, TransportError.
        """
        client = default_client(cls, cache=cache, base_url=base_url, proxy=proxy)
        options: dict[str, Any] = {
            "stream": stream,
            "timeout": timeout,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "api_key": api_key,
            "cookies": cookies,
            "extra_body": extra_body,
        }
        if protocol is not None:
            options["protocol"] = protocol
        if client is None:  # made outside a running loop: find the client when iteration starts
            return cls._chat_later(messages, model, cache, base_url, proxy, options)
        # The client's own generator, not one wrapped around it: no extra frame per item on the hot path.
        return client.chat(messages, model, **options)

    @classmethod
    async def _chat_later(
        cls,
        messages: Messages,
        model: str,
        cache: AuthCache | None,
        base_url: str | None,
        proxy: str | None,
        options: dict[str, Any],
    ) -> AsyncIterator[Chunk]:
        client = cls.client(cache=cache, base_url=base_url, proxy=proxy)
        async for item in client.chat(messages, model, **options):
            yield item

    @classmethod
    async def get_models(
        cls,
        *,
        base_url: str | None = None,
        proxy: str | None = None,
        refresh: bool = False,
        cache: AuthCache | None = None,
    ) -> list[str]:
        """The provider's models: its live list where it has one (cached), else the built-in list."""
        return await cls.client(cache=cache, base_url=base_url, proxy=proxy).models(refresh=refresh)

    @classmethod
    async def get_image_models(
        cls, *, base_url: str | None = None, proxy: str | None = None, cache: AuthCache | None = None
    ) -> list[str]:
        """The image models, loading the live list on first use."""
        return await cls.client(cache=cache, base_url=base_url, proxy=proxy).image_models()

    # -- hooks: what a provider's requests and answers look like --------------------------------------------

    @classmethod
    def _parse_models(cls, data: Any) -> tuple[list[str], list[str]]:
        """Split a live model list into (text models, image models)."""
        items = data.get("data", data) if isinstance(data, dict) else data
        return [str(m["id"] if isinstance(m, dict) else m) for m in items], []

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
        """The request JSON: the provider's fields (``_chat_fields``), then ``extra_body`` merged over them."""
        body = cls._chat_fields(model, list(messages), stream, max_tokens, temperature)
        if extra_body:
            body.update(extra_body)
        return body

    @classmethod
    def _chat_fields(
        cls, model: str, messages: list[Any], stream: bool, max_tokens: int | None, temperature: float | None
    ) -> dict[str, Any]:
        """The provider's own request fields (the OpenAI ones here; the web apps' payloads in subclasses)."""
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        return body

    @classmethod
    def _own_chat(
        cls,
        call: Call,
        model: str,
        messages: Messages,
        *,
        stream: bool,
        temperature: float | None,
        protocol: str | None,
    ) -> AsyncIterator[Chunk] | None:
        """The items of a chat over the provider's own wire protocol, or None for the HTTP request and decoder.

        Raises:
            ValueError: a ``protocol`` was asked of a provider that speaks only one.
        """
        if protocol is not None:
            raise ValueError(f"{cls.name()} has one protocol; protocol={protocol!r} is for Cloudflare")
        return None

    @classmethod
    def _chat_request(cls, call: Call, body: dict[str, Any]) -> Request:
        return cls._request(call, "POST", call.url(cls.chat_path), body)

    @classmethod
    def _decoder(cls, stream: bool, content_type: str) -> Decoder:
        # The answer's type decides, not the request: extra_body may have changed "stream".
        if content_type.startswith("application/json"):
            return JSONCompletionDecoder(cls.name())
        return OpenAIStreamDecoder(cls.name())

    @classmethod
    def _image_request(cls, call: Call, model: str, prompt: str, extra_body: Mapping[str, Any] | None) -> Request:
        """The request that generates images (providers with ``image_models`` override it)."""
        raise ProviderError(f"{cls.name()} has no image models", provider=cls.name())

    @classmethod
    def _image_response(cls, raw: bytes, prompt: str, model: str) -> ImageResponse:
        """The images in the answer to ``_image_request``."""
        raise ProviderError(f"{cls.name()} has no image models", provider=cls.name())

    @classmethod
    def _origins(cls, base_url: str | None) -> tuple[str, str, str | None]:
        """(site origin, API origin, the rebasing origin or None) for an explicit or configured base URL."""
        if base_url:
            rebased = normalize_origin(base_url)
            return rebased, rebased, rebased
        return cls.url, cls.api_base or cls.url, None

    @classmethod
    def _request(
        cls,
        call: Call,
        method: str,
        url: str,
        json: Any = None,
        *,
        extra_headers: Mapping[str, str] | None = None,
    ) -> Request:
        """A request carrying the call's identity (UA, client hints, cookies), proxy and TLS fingerprint."""
        identity = call.identity
        headers = identity.header_lines()
        headers.append(("Accept", "text/event-stream, application/json" if json is not None else "application/json"))
        body = None
        if json is not None:
            body = orjson.dumps(json)
            headers.append(("Content-Type", "application/json"))
        if cls.send_origin:
            headers += (("Origin", call.site), ("Referer", call.site + "/"))
        headers += cls.headers.items()
        if identity.api_key:
            headers.append(("Authorization", f"Bearer {identity.api_key}"))
        if extra_headers:
            headers += extra_headers.items()
        return Request(
            method,
            url,
            headers,
            body,
            proxy=identity.proxy,
            impersonate=identity.impersonate,
            idle_timeout=call.idle_timeout,
            deadline=call.deadline,
        )

    @classmethod
    async def _prepare(cls, call: Call) -> None:
        """Complete the call's credentials before the request (Cerebras fetches its API key here)."""
