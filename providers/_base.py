"""The OpenAI-style provider base: model names, the session, retries, healing, and the streaming loop.

A provider subclass declares its endpoints and models as class attributes and overrides a hook or two
(``_chat_request``, ``_decoder``, ``_prepare``); everything that is the same for all of them lives here.

The order of one call::

    get_model -> load the cached record -> _prepare (e.g. fetch an API key)
      -> send: first attempt; 5xx/429/connection errors retried with backoff (stamina), before any byte
      -> a challenge, 401 or 403: heal once (compare-and-delete the record, harvest, retry)
      -> stream: bytes -> decoder -> items yielded; no retry once an item was yielded
      -> after the end: Set-Cookie merged into the cached record, off the hot path
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import orjson

from ._config import ClientConfig
from ._decode import OpenAIStreamDecoder, completion_items, error_for_status
from ._exceptions import (
    CloudflareError,
    ModelNotFoundError,
    ProviderError,
    ProviderTimeout,
    RateLimitError,
    ResponseStatusError,
    StreamError,
    TransportError,
)
from ._session import Identity, identity_for, merge_set_cookies, open_cache
from ._types import Chunk, ImageResponse, Messages

if TYPE_CHECKING:
    from cache import AuthCache, SessionRecord

    from ._transport import Request, Response

_ATTEMPTS = 5
_MODELS_TTL = 600.0
_ERROR_BODY_LIMIT = 64 * 1024


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


@dataclass(slots=True)
class Call:
    """Everything one API call needs; the identity is replaced when the session heals."""

    provider: type[Provider]
    identity: Identity
    cache: AuthCache | None
    site: str
    api: str
    rebased: str | None
    deadline: float
    idle_timeout: float
    proxy: str | None = field(default=None, repr=False)  # may carry a password
    cookies: Mapping[str, str] | None = None
    api_key: str | None = field(default=None, repr=False)
    can_heal: bool = True

    def url(self, path: str, *, api: bool = True) -> str:
        """An endpoint on the API origin (or the site origin), keeping its path."""
        return (self.api if api else self.site) + path


def _backoff(exc: Exception) -> bool | float:
    """stamina's hook: retry connection errors, 5xx and 429 (waiting ``Retry-After`` when given)."""
    if isinstance(exc, RateLimitError):
        return exc.retry_after if exc.retry_after is not None else True
    if isinstance(exc, CloudflareError):
        return False
    if isinstance(exc, ResponseStatusError):
        return exc.status >= 500
    if isinstance(exc, ProviderTimeout):
        return not exc.deadline_passed
    return isinstance(exc, TransportError) and not isinstance(exc, StreamError)


def _is_auth_failure(exc: ProviderError) -> bool:
    return isinstance(exc, CloudflareError) or (isinstance(exc, ResponseStatusError) and exc.status in (401, 403))


# Tasks that merge cookies into the cache after a response; strong references keep them from being
# garbage-collected mid-flight.
_background: set[asyncio.Task[Any]] = set()


async def wait_background() -> None:
    """Wait for the cookie merges still running (the CLI and tests call this before the loop ends)."""
    while _background:
        await asyncio.gather(*list(_background), return_exceptions=True)


class Provider:
    """Base of the provider clients: an OpenAI-style chat API behind a harvested browser session."""

    label: ClassVar[str] = ""
    #: The site origin: where the session is harvested (and, unless ``api_base`` says otherwise, the API).
    url: ClassVar[str] = ""
    api_base: ClassVar[str | None] = None
    working: ClassVar[bool] = True
    needs_auth: ClassVar[bool] = False
    supports_stream: ClassVar[bool] = True
    supports_system_message: ClassVar[bool] = True
    supports_message_history: ClassVar[bool] = True
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
    def get_model(cls, model: str | None) -> str:
        """Resolve an alias to the provider's model name; empty means the default model.

        Raises:
            ModelNotFoundError: neither a known model nor an alias; the error lists the closest names.
        """
        if not model:
            return cls.default_model
        if model in cls.model_aliases:
            return cls.model_aliases[model]
        if model == cls.default_model or model in cls.models:
            return model
        known = cls._known_models()
        if model in known:
            return model
        raise ModelNotFoundError(model, [*known, *cls.model_aliases], provider=cls.name())

    @classmethod
    def _known_models(cls) -> list[str]:
        known = [cls.default_model, *cls.models, *cls.image_models]
        for (provider, _), (_, text, images) in _live_models.items():
            if provider == cls.name():
                known += text + images
        return [m for m in dict.fromkeys(known) if m]

    @classmethod
    def is_image_model(cls, model: str) -> bool:
        """True for a model that answers with images rather than text."""
        if model in cls.image_models:
            return True
        return any(p == cls.name() and model in images for (p, _), (_, _, images) in _live_models.items())

    # -- model lists ----------------------------------------------------------------------------------------

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
        text, images = await cls._model_lists(base_url=base_url, proxy=proxy, refresh=refresh, cache=cache)
        return list(dict.fromkeys([*text, *images]))

    @classmethod
    async def get_image_models(
        cls, *, base_url: str | None = None, proxy: str | None = None, cache: AuthCache | None = None
    ) -> list[str]:
        """The image models, loading the live list on first use."""
        _, images = await cls._model_lists(base_url=base_url, proxy=proxy, refresh=False, cache=cache)
        return images

    @classmethod
    async def _model_lists(
        cls, *, base_url: str | None, proxy: str | None, refresh: bool, cache: AuthCache | None
    ) -> tuple[list[str], list[str]]:
        builtin = (list(dict.fromkeys([cls.default_model, *cls.models])), list(cls.image_models))
        if cls.models_path is None:
            return builtin
        call = cls._new_call(base_url=base_url, proxy=proxy, timeout=30.0, cache=cache, heal=False)
        key = (cls.name(), call.api)
        cached = _live_models.get(key)
        if cached is not None and not refresh and time.monotonic() - cached[0] < _MODELS_TTL:
            return cached[1], cached[2]
        try:
            response = await cls._send(call, lambda c: cls._request(c, "GET", c.url(cls.models_path or "")))
            body = await response.aread()
            await response.aclose()
            text, images = cls._parse_models(orjson.loads(body))
        except (ProviderError, orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
            # Unreachable, refused or a shape we do not know: the built-in list is still right enough.
            return builtin
        _live_models[key] = (time.monotonic(), text, images)
        return text, images

    @classmethod
    def _parse_models(cls, data: Any) -> tuple[list[str], list[str]]:
        """Split a live model list into (text models, image models)."""
        items = data.get("data", data) if isinstance(data, dict) else data
        return [str(m["id"] if isinstance(m, dict) else m) for m in items], []

    # -- chat ---------------------------------------------------------------------------------------------

    @classmethod
    async def create_async_generator(
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
    ) -> AsyncIterator[Chunk]:
        """Send a chat and yield ``str`` deltas plus ``Reasoning``, ``FinishReason``, ``Usage`` (or an ``ImageResponse``).

        ``stream=False`` asks for one answer and yields the same types. ``extra_body`` is merged into the
        request JSON; ``base_url`` (or ``HARVEST_<PROVIDER>_BASE_URL``) rebases every endpoint onto one origin.

        Raises:
            ModelNotFoundError, MissingAuthError, ResponseStatusError, StreamError, TransportError.
        """
        model = cls.get_model(model)
        if cls.is_image_model(model):
            yield await cls._image_from_messages(
                model, messages, proxy=proxy, timeout=timeout, api_key=api_key, base_url=base_url, cache=cache
            )
            return
        call = cls._new_call(
            base_url=base_url, proxy=proxy, timeout=timeout, api_key=api_key, cookies=cookies, cache=cache
        )
        body = cls._chat_body(model, messages, stream, max_tokens, temperature, extra_body)
        response = await cls._send(call, lambda c: cls._chat_request(c, body))
        decoder = cls._decoder(stream, response.header("content-type") or "")
        try:
            # The hot path: one network chunk in, a list of items out, each yielded straight to the caller.
            feed, receive = decoder.feed, response.receive
            while data := await receive():
                for item in feed(data):
                    yield item
            for item in decoder.close():
                yield item
        finally:
            await response.aclose()
            cls._remember_cookies(call, response)

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
    def _chat_request(cls, call: Call, body: dict[str, Any]) -> Request:
        return cls._request(call, "POST", call.url(cls.chat_path), body)

    @classmethod
    def _decoder(cls, stream: bool, content_type: str) -> Decoder:
        # The answer's type decides, not the request: extra_body may have changed "stream".
        if content_type.startswith("application/json"):
            return JSONCompletionDecoder(cls.name())
        return OpenAIStreamDecoder(cls.name())

    @classmethod
    async def _image_from_messages(cls, model: str, messages: Messages, **kwargs: Any) -> ImageResponse:
        raise ProviderError(f"{cls.name()} has no image models", provider=cls.name())

    # -- the call -----------------------------------------------------------------------------------------

    @classmethod
    def _origins(cls, base_url: str | None) -> tuple[str, str, str | None]:
        """(site origin, API origin, the rebasing origin or None)."""
        rebased = base_url or ClientConfig.from_env(cls.name()).base_url
        if rebased:
            rebased = rebased.rstrip("/")
            return rebased, rebased, rebased
        return cls.url, cls.api_base or cls.url, None

    @classmethod
    def _new_call(
        cls,
        *,
        base_url: str | None,
        proxy: str | None,
        timeout: float,
        api_key: str | None = None,
        cookies: Mapping[str, str] | None = None,
        cache: AuthCache | None = None,
        heal: bool = True,
    ) -> Call:
        site, api, rebased = cls._origins(base_url)
        if cls.uses_session:
            cache = cache or open_cache()
            record = cache.get(cls.name())  # a stat() unless the file changed: cheap enough for every call
        else:
            cache, record = None, None
        identity = identity_for(record, cookies=cookies, api_key=api_key, proxy=proxy, impersonate=cls.uses_session)
        if not cls.uses_session:
            identity.user_agent = "harvest/0.1"
            identity.headers = []
        return Call(
            provider=cls,
            identity=identity,
            cache=cache,
            site=site,
            api=api,
            rebased=rebased,
            deadline=asyncio.get_running_loop().time() + timeout,
            idle_timeout=float(timeout),
            proxy=proxy,
            cookies=cookies,
            api_key=api_key,
            can_heal=heal and cls.uses_session and cache is not None,
        )

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
        from ._transport import Request

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

    @classmethod
    async def _send(cls, call: Call, build: Callable[[Call], Request]) -> Response:
        """Open a 2xx response: retry before the first byte, heal a refused session once.

        Healing drops the record this call used (compare-and-delete), harvests a fresh one (single-flight),
        rebuilds the request with it and tries once more.
        """
        healed = False
        while True:
            try:
                await cls._prepare(call)
                return await _send_retrying(call, build(call))
            except ProviderError as exc:
                if healed or not call.can_heal or not _is_auth_failure(exc) or call.cache is None:
                    raise
            from ._heal import heal  # here, not above: the common call never heals

            healed = True
            record = await heal(
                cls.name(), call.identity.record, cache=call.cache, base_url=call.rebased, proxy=call.proxy
            )
            call.identity = identity_for(record, cookies=call.cookies, api_key=call.api_key, proxy=call.proxy)

    @classmethod
    def _remember_cookies(cls, call: Call, response: Response) -> None:
        """Merge the response's ``Set-Cookie`` into the cached record: at most one write, in a thread."""
        record, cache = call.identity.record, call.cache
        if record is None or cache is None or not 200 <= response.status < 300:
            return
        set_cookies = response.set_cookies
        if not set_cookies or merge_set_cookies(record, set_cookies) is None:
            return
        _spawn(asyncio.to_thread(cache.update, cls.name(), lambda cur: _merged(cur, record, set_cookies)))


def _merged(current: SessionRecord | None, used: SessionRecord, set_cookies: list[str]) -> SessionRecord | None:
    """The update function: merge only into the record the cookies were issued to."""
    if current is None or current.harvested_at != used.harvested_at:
        return current
    return merge_set_cookies(current, set_cookies) or current


def _spawn(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


async def _send_once(call: Call, request: Request) -> Response:
    """One exchange; a non-2xx answer is read (bounded), closed and raised as its typed error."""
    from ._transport import get_transport

    response = await get_transport().handle_request(request)
    status = response.status
    if 200 <= status < 300:
        return response
    try:
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > _ERROR_BODY_LIMIT:
                break
    except ProviderError:
        pass  # the status says enough
    finally:
        await response.aclose()
    raise error_for_status(status, response.headers, body, provider=call.provider.name(), url=request.url)


async def _send_retrying(call: Call, request: Request) -> Response:
    """Send with up to 5 attempts for retryable failures, all before the first byte is read."""
    import stamina

    # The first attempt skips stamina: building its retry context costs ~40us, a tenth of a whole request.
    try:
        return await _send_once(call, request)
    except ProviderError as exc:
        if not _backoff(exc):
            raise
        first: ProviderError | None = exc
    async for attempt in stamina.retry_context(
        on=_backoff, attempts=_ATTEMPTS, timeout=None, wait_initial=0.5, wait_max=10.0, wait_jitter=0.5
    ):
        with attempt:
            if first is not None:
                # Replaying the first failure lets stamina count it and wait its backoff (or Retry-After).
                replay, first = first, None
                raise replay
            return await _send_once(call, request)
    raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover


# (provider name, API origin) -> (loaded at, text models, image models)
_live_models: dict[tuple[str, str], tuple[float, list[str], list[str]]] = {}
