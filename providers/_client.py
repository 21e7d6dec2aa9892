"""``Client``: one provider's API behind a harvested session, with its own connection pool and models cache.

The order of one call::

    resolve the model -> load the cached record -> the provider's ``_prepare`` (e.g. fetch an API key)
      -> send: first attempt; 5xx/429/connection errors retried with backoff (stamina), before any byte
      -> a challenge, 401 or 403: ask the ``Refresher`` for a fresh record once, and retry with it
      -> stream: bytes -> decoder -> items yielded; no retry once an item was yielded
      -> after the end: Set-Cookie merged into the cached record, off the hot path

The client owns what it was not given: the transport (``CurlTransport``), the cache (``AuthCache.open()``)
and the refresher (``default_refresher``); ``aclose`` closes those and waits for the cookie merges.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from ._config import ClientConfig
from ._decode import error_for_html, error_for_status, is_html, looks_like_html
from ._exceptions import (
    CloudflareError,
    ProviderError,
    ProviderTimeout,
    RateLimitError,
    ResponseStatusError,
    StreamError,
    TransportError,
)
from ._session import RequestIdentity, identity_for, merge_set_cookies
from ._types import Chunk, ImageResponse, Messages, image_prompt

if TYPE_CHECKING:
    from cache import AuthCache, SessionRecord

    from ._base import Decoder, Provider
    from ._refresh import Refresher
    from ._transport import AsyncTransport, Request, Response
    from ._websocket import WebSocketConnector

T = TypeVar("T")

_ATTEMPTS = 5
_MODELS_TTL = 600.0
_ERROR_BODY_LIMIT = 64 * 1024


@dataclass(slots=True)
class Call:
    """Everything one API call needs; the identity is replaced when the session is refreshed."""

    client: Client
    provider: type[Provider]
    identity: RequestIdentity
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

    async def send(self, request: Request) -> Response:
        """Send a side request of this call (retried like the main one, never healed): a provider hook's tool."""
        return await self.client._send_retrying(self, request)

    def remember(self, update: Callable[[SessionRecord | None], SessionRecord | None]) -> None:
        """Apply ``update`` to the cached record in a thread, off the hot path (the client waits for it)."""
        if self.cache is not None:
            self.client._spawn(asyncio.to_thread(self.cache.update, self.provider.name(), update))


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


class Client:
    """One provider's API: chat, models and images, over a transport, a cache and a refresher.

    >>> async with Client("cerebras") as client:
    ...     async for item in client.chat([{"role": "user", "content": "Hi"}]):
    ...         print(item, end="")

    Args:
        provider: a provider class (``Cerebras``) or its name (``"cerebras"``).
        cache: where the session records are; default ``AuthCache.open()`` (the environment's cache).
        transport: what moves the bytes; default a ``CurlTransport`` of the client's own.
        refresher: what supplies a fresh record when the session is refused; default ``default_refresher``.
        base_url: rebase every endpoint onto this origin (default ``HARVEST_<PROVIDER>_BASE_URL``).
        proxy: the proxy for every request (default the record's own).
    """

    def __init__(
        self,
        provider: str | type[Provider],
        *,
        cache: AuthCache | None = None,
        transport: AsyncTransport | None = None,
        refresher: Refresher | None = None,
        base_url: str | None = None,
        proxy: str | None = None,
    ) -> None:
        if isinstance(provider, str):
            from ._registry import get_provider

            provider = get_provider(provider)
        self.provider: type[Provider] = provider
        self._name = provider.name()
        self._cache = cache
        self._transport = transport
        self._owns_transport = transport is None
        self._refresher = refresher
        self._owns_refresher = refresher is None
        self._base_url = base_url
        self._origins: tuple[str, str, str | None] | None = None  # (site, API, rebased), found on first use
        self.proxy = proxy
        # The live model lists, loaded on first use: (loaded at, text models, image models).
        self._live: tuple[float, list[str], list[str]] | None = None
        # Cookie merges and key updates still writing to the cache; strong references keep them from being
        # garbage-collected mid-flight, and ``aclose`` waits for them.
        self._background: set[asyncio.Task[Any]] = set()
        # WebSockets (Cloudflare's agent protocol), made on first use and closed with the client.
        self._websockets: WebSocketConnector | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<Client {self._name}{' closed' if self._closed else ''}>"

    # -- what the client owns ---------------------------------------------------------------------------------

    @property
    def cache(self) -> AuthCache:
        """The session cache (opened on first use when none was given)."""
        if self._cache is None:
            from cache import AuthCache

            self._cache = AuthCache.open()
        return self._cache

    def _open_transport(self) -> AsyncTransport:
        if self._closed:
            raise RuntimeError("this Client is closed")
        if self._transport is None:
            from ._transport import CurlTransport

            self._transport = CurlTransport()
        return self._transport

    def websockets(self) -> WebSocketConnector:
        """What opens this client's WebSockets (made on first use, closed by ``aclose``)."""
        if self._closed:
            raise RuntimeError("this Client is closed")
        if self._websockets is None:
            from ._websocket import WebSocketConnector

            self._websockets = WebSocketConnector()
        return self._websockets

    @property
    def refresher(self) -> Refresher:
        """What refreshes a refused session (``default_refresher(cache)`` when none was given)."""
        if self._refresher is None:
            from ._refresh import default_refresher

            self._refresher = default_refresher(self.cache)
        return self._refresher

    async def aclose(self) -> None:
        """Wait for the pending cache writes, then close what the client made itself (transport, refresher)."""
        if self._closed:
            return
        await self.wait_background()
        self._closed = True
        if self._owns_refresher and self._refresher is not None:
            close = getattr(self._refresher, "aclose", None)
            if close is not None:
                await close()
        if self._owns_transport and self._transport is not None:
            await self._transport.aclose()
        if self._websockets is not None:
            await self._websockets.aclose()

    async def wait_background(self) -> None:
        """Wait for the cookie merges and key updates still writing to the cache."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- models -----------------------------------------------------------------------------------------------

    def resolve_model(self, model: str | None) -> str:
        """Resolve an alias (or empty: the default) to the provider's model name, live models included.

        Raises:
            ModelNotFoundError: an unknown name; the error lists the closest names.
        """
        live = self._live
        return self.provider.get_model(model, live=(*live[1], *live[2]) if live is not None else ())

    def is_image_model(self, model: str) -> bool:
        """True for a model that answers with images rather than text."""
        live = self._live
        return model in self.provider.image_models or (live is not None and model in live[2])

    async def models(self, *, refresh: bool = False) -> list[str]:
        """The provider's models: its live list where it has one (kept 10 minutes), else the built-in list."""
        text, images = await self._model_lists(refresh=refresh)
        return list(dict.fromkeys([*text, *images]))

    async def image_models(self) -> list[str]:
        """The image models, loading the live list on first use."""
        _, images = await self._model_lists(refresh=False)
        return images

    async def _model_lists(self, *, refresh: bool) -> tuple[list[str], list[str]]:
        provider = self.provider
        builtin = (list(dict.fromkeys([provider.default_model, *provider.models])), list(provider.image_models))
        if provider.models_path is None:
            return builtin
        live = self._live
        if live is not None and not refresh and time.monotonic() - live[0] < _MODELS_TTL:
            return live[1], live[2]
        call = self._new_call(timeout=30.0, heal=False)
        try:
            response = await self._send(call, lambda c: provider._request(c, "GET", c.url(provider.models_path or "")))
            body = await response.aread()
            await response.aclose()
            text, images = provider._parse_models(orjson.loads(body))
        except (ProviderError, orjson.JSONDecodeError, TypeError, KeyError, AttributeError):
            # Unreachable, refused or a shape we do not know: the built-in list is still right enough.
            return builtin
        self._live = (time.monotonic(), text, images)
        return text, images

    # -- chat and images --------------------------------------------------------------------------------------

    async def chat(
        self,
        messages: Messages,
        model: str | None = None,
        *,
        stream: bool = True,
        timeout: float = 120,
        max_tokens: int | None = None,
        temperature: float | None = None,
        api_key: str | None = None,
        cookies: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        protocol: str | None = None,
    ) -> AsyncIterator[Chunk]:
        """Send a chat and yield ``str`` deltas plus ``Reasoning``, ``FinishReason``, ``Usage`` (or an ``ImageResponse``).

        ``stream=False`` asks for one answer and yields the same types. ``extra_body`` is merged into the
        request JSON. ``protocol`` picks the wire protocol of a provider that has more than one (Cloudflare:
        ``"agent"``, the default, or ``"inference"``).

        Raises:
            ModelNotFoundError, MissingAuthError, ResponseStatusError, StreamError, TransportError.
            RuntimeError: the client is closed.
        """
        started = await self._start_chat(
            messages, model, stream, timeout, max_tokens, temperature, api_key, cookies, extra_body, protocol
        )
        if not isinstance(started, tuple):
            # An image model's answer, or a provider with its own wire protocol (Cloudflare's agent socket).
            async for item in started:
                yield item
            return
        call, response, decoder = started
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
            self._remember_cookies(call, response)

    async def chat_batches(
        self,
        messages: Messages,
        model: str | None = None,
        *,
        stream: bool = True,
        timeout: float = 120,
        max_tokens: int | None = None,
        temperature: float | None = None,
        api_key: str | None = None,
        cookies: Mapping[str, str] | None = None,
        extra_body: Mapping[str, Any] | None = None,
        protocol: str | None = None,
    ) -> AsyncIterator[Sequence[Chunk]]:
        """``chat``, but the items of one network read come together, as one non-empty sequence.

        For a caller that forwards the items (``harvest serve``): it can write each batch at once, and pays
        one iteration per read instead of one per item. Same arguments and errors as ``chat``.
        """
        started = await self._start_chat(
            messages, model, stream, timeout, max_tokens, temperature, api_key, cookies, extra_body, protocol
        )
        if not isinstance(started, tuple):
            async for item in started:
                yield (item,)
            return
        call, response, decoder = started
        try:
            feed, receive = decoder.feed, response.receive
            while data := await receive():
                items = feed(data)
                if items:
                    yield items
            items = decoder.close()
            if items:
                yield items
        finally:
            await response.aclose()
            self._remember_cookies(call, response)

    async def _start_chat(
        self,
        messages: Messages,
        model: str | None,
        stream: bool,
        timeout: float,
        max_tokens: int | None,
        temperature: float | None,
        api_key: str | None,
        cookies: Mapping[str, str] | None,
        extra_body: Mapping[str, Any] | None,
        protocol: str | None,
    ) -> tuple[Call, Response, Decoder] | AsyncIterator[Chunk]:
        """Open a chat: (the call, its open 2xx response, the decoder for it), or the items of a chat that is
        not an HTTP stream (an image model's answer, a provider's own wire protocol)."""
        provider = self.provider
        model = self.resolve_model(model)
        if self.is_image_model(model):
            return _one(await self.image(image_prompt(messages), model, timeout=timeout, api_key=api_key))
        call = self._new_call(timeout=timeout, api_key=api_key, cookies=cookies)
        own = provider._own_chat(call, model, messages, stream=stream, temperature=temperature, protocol=protocol)
        if own is not None:
            return own
        body = provider._chat_body(model, messages, stream, max_tokens, temperature, extra_body)
        response = await self._send(call, lambda c: provider._chat_request(c, body))
        return call, response, provider._decoder(stream, response.header("content-type") or "")

    async def image(
        self,
        prompt: str,
        model: str | None = None,
        *,
        timeout: float = 180,
        api_key: str | None = None,
        extra_body: Mapping[str, Any] | None = None,
    ) -> ImageResponse:
        """Generate images for ``prompt``; the answer holds URLs or ``data:`` URIs.

        Raises:
            ModelNotFoundError, MissingAuthError, ResponseStatusError, ProviderError (no image models, no image).
        """
        provider = self.provider
        if not provider.image_models:
            raise ProviderError(f"{self._name} has no image models", provider=self._name)
        model = self.resolve_model(model or provider.default_image_model)
        call = self._new_call(timeout=timeout, api_key=api_key)
        response = await self._send(call, lambda c: provider._image_request(c, model, prompt, extra_body))
        try:
            raw = await response.aread()
        finally:
            await response.aclose()
            self._remember_cookies(call, response)
        return provider._image_response(raw, prompt, model)

    # -- the call ---------------------------------------------------------------------------------------------

    def _locate(self) -> tuple[str, str, str | None]:
        base_url = self._base_url or ClientConfig.from_env(self._name).base_url
        self._origins = origins = self.provider._origins(base_url)
        return origins

    def _new_call(
        self,
        *,
        timeout: float,
        api_key: str | None = None,
        cookies: Mapping[str, str] | None = None,
        heal: bool = True,
    ) -> Call:
        if self._closed:
            raise RuntimeError("this Client is closed")
        provider = self.provider
        site, api, rebased = self._origins or self._locate()
        cache: AuthCache | None
        if provider.uses_session:
            cache = self._cache or self.cache
            record = cache.get(self._name)  # a stat() unless the file changed: cheap enough for every call
        else:
            cache, record = None, None
        proxy = self.proxy
        identity = identity_for(
            record, cookies=cookies, api_key=api_key, proxy=proxy, impersonate=provider.uses_session
        )
        if not provider.uses_session:
            identity.user_agent = "harvest/0.1"
            identity.headers = []
        return Call(
            client=self,
            provider=provider,
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
            can_heal=heal and cache is not None,
        )

    async def _send(self, call: Call, build: Callable[[Call], Request]) -> Response:
        """Open a 2xx response: retry before the first byte, refresh a refused session once.

        A refresh asks the refresher for a record newer than the one this call used (another caller may
        already have stored one), rebuilds the request with it and tries once more.
        """
        return await self._open(call, lambda c: self._send_retrying(c, build(c)))

    async def _open(self, call: Call, attempt: Callable[[Call], Awaitable[T]]) -> T:
        """Run ``attempt`` (which retries what is retryable); refresh a refused session once and run it again.

        ``_send`` opens HTTP responses with it, and Cloudflare its agent WebSocket.
        """
        provider = call.provider
        refreshed = False
        while True:
            try:
                await provider._prepare(call)
                return await attempt(call)
            except ProviderError as exc:
                if refreshed or not call.can_heal or not _is_auth_failure(exc):
                    raise
            refreshed = True
            record = await self.refresher.refresh(
                self._name, stale=call.identity.record, base_url=call.rebased, proxy=call.proxy
            )
            call.identity = identity_for(record, cookies=call.cookies, api_key=call.api_key, proxy=call.proxy)

    async def _send_once(self, call: Call, request: Request) -> Response:
        """One exchange; a non-2xx answer, or an HTML page, is read (bounded), closed and raised as its typed error."""
        transport = self._transport if self._transport is not None and not self._closed else self._open_transport()
        response = await transport.handle_request(request)
        status = response.status
        html = False
        body = b""
        if 200 <= status < 300:
            # An API answers with an event stream or JSON: a 2xx HTML page is a challenge (or a provider's error
            # page) in the API's place, and must not reach a decoder that would call it a truncated stream.
            content_type = response.header("content-type")
            if content_type is not None:
                html = is_html(content_type)
                if not html:
                    return response
            else:
                # No type given (rare): sniff the first bytes, and give them back if they are not a page.
                try:
                    body = await response.receive()
                except BaseException:
                    await response.aclose()
                    raise
                if not looks_like_html(body):
                    return _Replayed(response, body)
                html = True
        try:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > _ERROR_BODY_LIMIT:
                    break
        except ProviderError:
            pass  # the status says enough
        finally:
            await response.aclose()
        if html:
            raise error_for_html(status, response.headers, body, provider=self._name, url=request.url)
        raise error_for_status(status, response.headers, body, provider=self._name, url=request.url)

    async def _send_retrying(self, call: Call, request: Request) -> Response:
        """Send with up to 5 attempts for retryable failures, all before the first byte is read."""
        return await self._retrying(lambda: self._send_once(call, request))

    async def _retrying(self, once: Callable[[], Awaitable[T]]) -> T:
        """Up to 5 runs of ``once`` for retryable failures (5xx, 429 after ``Retry-After``, connection errors)."""
        # The first attempt skips stamina: building its retry context costs ~40us, a tenth of a whole request.
        try:
            return await once()
        except ProviderError as exc:
            if not _backoff(exc):
                raise
            first: ProviderError | None = exc
        import stamina

        async for attempt in stamina.retry_context(
            on=_backoff, attempts=_ATTEMPTS, timeout=None, wait_initial=0.5, wait_max=10.0, wait_jitter=0.5
        ):
            with attempt:
                if first is not None:
                    # Replaying the first failure lets stamina count it and wait its backoff (or Retry-After).
                    replay, first = first, None
                    raise replay
                return await once()
        raise AssertionError("unreachable: stamina re-raises the last error")  # pragma: no cover

    def _remember_cookies(self, call: Call, response: Response) -> None:
        """Merge the response's ``Set-Cookie`` into the cached record: at most one write, in a thread."""
        record = call.identity.record
        if record is None or call.cache is None or not 200 <= response.status < 300:
            return
        set_cookies = response.set_cookies
        if not set_cookies or merge_set_cookies(record, set_cookies) is None:
            return
        call.remember(lambda current: _merged(current, record, set_cookies))


async def _one(item: Chunk) -> AsyncIterator[Chunk]:
    yield item


class _Replayed:
    """A response whose first body chunk was read ahead (to sniff its type) and is given back first."""

    __slots__ = ("_first", "_response", "url")

    def __init__(self, response: Response, first: bytes) -> None:
        self._response = response
        self._first: bytes | None = first
        self.url = response.url

    @property
    def status(self) -> int:
        return self._response.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def set_cookies(self) -> list[str]:
        return self._response.set_cookies

    def header(self, name: str) -> str | None:
        return self._response.header(name)

    async def receive(self) -> bytes:
        first, self._first = self._first, None
        return first if first is not None else await self._response.receive()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        while data := await self.receive():
            yield data

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_bytes()])

    async def aclose(self) -> None:
        await self._response.aclose()

    async def __aenter__(self) -> _Replayed:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def _merged(current: SessionRecord | None, used: SessionRecord, set_cookies: list[str]) -> SessionRecord | None:
    """The update function: merge only into the record the cookies were issued to."""
    if current is None or current.harvested_at != used.harvested_at:
        return current
    return merge_set_cookies(current, set_cookies) or current
