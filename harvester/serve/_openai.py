"""The OpenAI-compatible gateway: ``/v1/models``, ``/v1/chat/completions`` (stream or not) and
``/v1/images/generations``, over the provider clients.

Model ids are ``provider/model`` (``cerebras/llama3.1-8b``), or a bare id of the configured default provider.
Healing and retries are the clients'; this module only translates shapes and errors:

    400 bad request · 401 bad token · 404 unknown model · 429 rate limit · 502 provider error · 504 timeout

An error after the first byte of a stream is an SSE ``error`` event followed by ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from harvester.daemon._logging import log_event

from ._app import BadRequest, error_response

if TYPE_CHECKING:
    from providers import Provider

    from ._app import ServeState

logger = logging.getLogger("harvest.serve")

#: Request fields the gateway reads itself; every other one goes to the provider like ``extra_body``.
_OWN_FIELDS = frozenset({"model", "messages", "stream", "temperature", "max_tokens", "stream_options", "n", "user"})
MODELS_TIMEOUT = 10.0  # seconds for a provider's live model list before its built-in list is used
_DONE = b"data: [DONE]\n\n"


class GatewayError(Exception):
    """An OpenAI error object with its HTTP status."""

    def __init__(self, status: int, message: str, code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after

    def response(self, path: str) -> web.Response:
        headers = {"Retry-After": f"{self.retry_after:g}"} if self.retry_after else None
        return error_response(path, self.status, str(self), code=self.code, headers=headers)

    def event(self) -> bytes:
        kind = {429: "rate_limit_error", 504: "timeout_error", 404: "not_found_error"}.get(self.status, "api_error")
        error = {"message": str(self), "type": kind, "code": self.code}
        return b"data: " + orjson.dumps({"error": error}) + b"\n\n"


def translate(exc: BaseException) -> GatewayError:
    """A provider error as the OpenAI error a client expects (the one place they are mapped)."""
    from providers import (
        MissingAuthError,
        ModelNotFoundError,
        ProviderTimeout,
        RateLimitError,
    )

    if isinstance(exc, ModelNotFoundError):
        return GatewayError(404, str(exc), "model_not_found")
    if isinstance(exc, RateLimitError):
        return GatewayError(429, str(exc), "rate_limit_exceeded", retry_after=exc.retry_after)
    if isinstance(exc, ProviderTimeout | TimeoutError):
        return GatewayError(504, str(exc) or "the provider did not answer in time", "timeout")
    if isinstance(exc, MissingAuthError):
        return GatewayError(502, str(exc), "missing_session")
    if isinstance(exc, ValueError):  # the clients' word for a bad argument (a provider that needs a base_url)
        return GatewayError(400, str(exc), "invalid_request")
    return GatewayError(502, str(exc), "provider_error")


class ProviderAdapter:
    """The calls the gateway makes, over one ``providers.Client`` per provider.

    The clients share the server's curl transport (one connection pool), its cache, and its single flight as
    their refresher: a provider session refused mid-call is harvested again through the same lock table (and
    the same browser) as FlareSolverr's requests.
    """

    def __init__(self, state: ServeState) -> None:
        self._state = state
        self._clients: dict[str, Any] = {}

    def client(self, provider: type[Provider]) -> Any:
        """The client of ``provider``, made on first use."""
        name = provider.name()
        client = self._clients.get(name)
        if client is None:
            from providers import Client

            state = self._state
            client = self._clients[name] = Client(
                provider,
                cache=state.cache,
                transport=state.transport,
                refresher=state.runs.flight,
                base_url=state.config.base_url(name),
            )
        return client

    def chat(
        self,
        provider: type[Provider],
        model: str,
        messages: list[Any],
        *,
        stream: bool,
        temperature: float | None,
        max_tokens: int | None,
        extra_body: Mapping[str, Any],
    ) -> AsyncIterator[Any]:
        return self.client(provider).chat(  # type: ignore[no-any-return]
            messages,
            model,
            stream=stream,
            temperature=temperature,
            max_tokens=max_tokens,
            extra_body=extra_body or None,
        )

    async def models(self, provider: type[Provider]) -> list[str]:
        return await self.client(provider).models()  # type: ignore[no-any-return]

    async def image(
        self, provider: type[Provider], prompt: str, model: str | None, extra_body: Mapping[str, Any]
    ) -> Any:
        if not provider.image_models:
            raise GatewayError(400, f"{provider.name()} does not generate images", "unsupported_model")
        return await self.client(provider).image(prompt, model, extra_body=extra_body or None)

    async def aclose(self) -> None:
        """Wait for the clients' cookie merges (the transport and the refresher are the server's to close)."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


class Gateway:
    """The OpenAI routes over the shared state."""

    def __init__(self, state: ServeState, adapter: ProviderAdapter | None = None) -> None:
        self.state = state
        self.clients = adapter or ProviderAdapter(state)

    async def aclose(self) -> None:
        """Finish background cookie merges and close the providers' transport."""
        await self.clients.aclose()

    # -- model names ------------------------------------------------------------------------------------

    def resolve(self, model: Any) -> tuple[type[Provider], str]:
        """``provider/model`` (or a bare model of the default provider) -> (provider class, model)."""
        from providers import PROVIDERS

        if not isinstance(model, str) or not model:
            raise GatewayError(
                400, "'model' is required: use provider/model, e.g. cerebras/llama3.1-8b", "invalid_model"
            )
        prefix, sep, rest = model.partition("/")
        if sep and prefix.lower() in PROVIDERS and rest:
            return PROVIDERS[prefix.lower()], rest
        default = self.state.settings.default_provider
        if default and default.lower() in PROVIDERS:
            return PROVIDERS[default.lower()], model
        known = ", ".join(sorted(PROVIDERS))
        raise GatewayError(
            404, f"unknown model {model!r}: use provider/model with a provider of {known}", "model_not_found"
        )

    # -- GET /v1/models -----------------------------------------------------------------------------------

    async def models(self, request: web.Request) -> web.Response:
        """Every provider's models as ``provider/model`` ids (plus the default provider's bare ids)."""
        from providers import PROVIDERS

        async def one(name: str, provider: type[Provider]) -> list[str]:
            try:
                async with asyncio.timeout(MODELS_TIMEOUT):
                    return await self.clients.models(provider)
            except Exception as exc:  # one provider down must not hide the others; its built-in list stands in
                log_event(logger, logging.INFO, "serve.models.fallback", provider=name, error=type(exc).__name__)
                return [
                    m for m in dict.fromkeys([provider.default_model, *provider.models, *provider.image_models]) if m
                ]

        names = sorted(PROVIDERS)
        lists = await asyncio.gather(*(one(name, PROVIDERS[name]) for name in names))
        data = []
        for name, models in zip(names, lists, strict=True):
            data += [{"id": f"{name}/{m}", "object": "model", "created": 0, "owned_by": name} for m in models]
        default = (self.state.settings.default_provider or "").lower()
        if default in PROVIDERS:
            models = lists[names.index(default)]
            data += [{"id": m, "object": "model", "created": 0, "owned_by": default} for m in models]
        return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type="application/json")

    # -- POST /v1/chat/completions ---------------------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """A chat completion, streamed as SSE ``chat.completion.chunk``s or as one ``chat.completion``."""
        try:
            body = await self.state.read_json(request)
            if not isinstance(body, dict):
                raise GatewayError(400, "the request body must be a JSON object", "invalid_request")
            provider, model = self.resolve(body.get("model"))
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
                raise GatewayError(400, "'messages' must be a non-empty list of message objects", "invalid_messages")
            temperature = _number(body, "temperature")
            max_tokens = _integer(body, "max_tokens")
            extra = {k: v for k, v in body.items() if k not in _OWN_FIELDS}
            stream = bool(body.get("stream"))
            items = self.clients.chat(
                provider,
                model,
                messages,
                stream=stream,
                temperature=temperature,
                max_tokens=max_tokens,
                extra_body=extra,
            )
            answer_model = f"{provider.name()}/{model}"
            if stream:
                return await self._stream(request, items, answer_model)
            return await self._complete(items, answer_model)
        except GatewayError as exc:
            return exc.response(request.path)
        except BadRequest:
            raise
        except Exception as exc:
            if not _is_provider_error(exc):
                raise
            return translate(exc).response(request.path)

    async def _complete(self, items: AsyncIterator[Any], model: str) -> web.Response:
        from providers import FinishReason, ImageResponse, Reasoning, Usage

        text: list[str] = []
        reasoning: list[str] = []
        usage: Usage | None = None
        finish = "stop"
        async for item in items:
            if isinstance(item, str):
                text.append(item)
            elif isinstance(item, Reasoning):
                reasoning.append(item.text)
            elif isinstance(item, Usage):
                usage = item
            elif isinstance(item, FinishReason):
                finish = item.reason
            elif isinstance(item, ImageResponse):
                text.append("\n".join(f"![image]({url})" for url in item.images))
        message: dict[str, Any] = {"role": "assistant", "content": "".join(text)}
        if reasoning:
            message["reasoning_content"] = "".join(reasoning)
        document = {
            "id": _completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": _usage(usage),
        }
        return web.Response(body=orjson.dumps(document), content_type="application/json")

    async def _stream(self, request: web.Request, items: AsyncIterator[Any], model: str) -> web.StreamResponse:
        from providers import FinishReason, ImageResponse, Reasoning, Usage

        iterator = aiter(items)
        # The first item before any byte is sent: an error now is still a proper HTTP error.
        try:
            first = await anext(iterator)
        except StopAsyncIteration:
            first = None
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        head = (
            b'data: {"id":"'
            + _completion_id().encode()
            + b'","object":"chat.completion.chunk","created":'
            + str(int(time.time())).encode()
            + b',"model":'
            + orjson.dumps(model)
            + b',"choices":[{"index":0,"delta":'
        )
        open_tail = b',"finish_reason":null}]}\n\n'
        out = _Coalescer(response)
        add = out.add
        usage: Usage | None = None
        finish = "stop"
        add(head + b'{"role":"assistant","content":""}' + open_tail)
        try:
            item = first
            while item is not None:
                if type(item) is str:
                    add(head + b'{"content":' + orjson.dumps(item) + b"}" + open_tail)
                elif isinstance(item, Reasoning):
                    add(head + b'{"reasoning_content":' + orjson.dumps(item.text) + b"}" + open_tail)
                elif isinstance(item, Usage):
                    usage = item
                elif isinstance(item, FinishReason):
                    finish = item.reason
                elif isinstance(item, ImageResponse):
                    content = "\n".join(f"![image]({url})" for url in item.images)
                    add(head + b'{"content":' + orjson.dumps(content) + b"}" + open_tail)
                elif isinstance(item, str):
                    add(head + b'{"content":' + orjson.dumps(str(item)) + b"}" + open_tail)
                if out.full:
                    await out.drain()
                item = await anext(iterator, None)
            tail = b',"finish_reason":' + orjson.dumps(finish) + b'}],"usage":' + orjson.dumps(_usage(usage)) + b"}\n\n"
            add(head + b"{}" + tail + _DONE)
        except ConnectionError:
            logger.debug("serve.stream.client_left")  # the client went away: nobody to tell, nothing to log loudly
        except Exception as exc:
            if not _is_provider_error(exc):
                logger.exception("serve.stream.internal_error")
                exc = GatewayError(500, "internal error in harvest serve (please report this)", "internal_error")
            error = exc if isinstance(exc, GatewayError) else translate(exc)
            add(error.event() + _DONE)
        finally:
            closing = getattr(items, "aclose", None)
            if closing is not None:
                await closing()  # the provider's response is closed now, not when the generator is collected
            with contextlib.suppress(ConnectionError):  # a client that left mid-stream is not a server error
                await out.close()
        return response

    # -- POST /v1/images/generations ---------------------------------------------------------------------------

    async def images(self, request: web.Request) -> web.Response:
        """Images for a prompt (DeepInfra by default), as ``url`` or ``b64_json`` per ``response_format``."""
        from providers import PROVIDERS

        try:
            body = await self.state.read_json(request)
            if not isinstance(body, dict):
                raise GatewayError(400, "the request body must be a JSON object", "invalid_request")
            prompt = body.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                raise GatewayError(400, "'prompt' must be a non-empty string", "invalid_prompt")
            fmt = body.get("response_format") or "url"
            if fmt not in ("url", "b64_json"):
                raise GatewayError(400, "'response_format' must be 'url' or 'b64_json'", "invalid_response_format")
            raw_model = body.get("model")
            if raw_model:
                provider, model = self.resolve(raw_model)
            else:
                provider, model = PROVIDERS["deepinfra"], ""
            extra = {
                k: v for k, v in body.items() if k not in ("model", "prompt", "response_format", "n", "size", "user")
            }
            result = await self.clients.image(provider, prompt, model or None, extra)
            data = [await self._image_item(image, fmt) for image in result.images]
        except GatewayError as exc:
            return exc.response(request.path)
        except Exception as exc:
            if not _is_provider_error(exc):
                raise
            return translate(exc).response(request.path)
        document = {"created": int(time.time()), "data": data}
        return web.Response(body=orjson.dumps(document), content_type="application/json")

    async def _image_item(self, image: str, fmt: str) -> dict[str, str]:
        if image.startswith("data:"):
            if fmt == "url":
                return {"url": image}
            return {"b64_json": image.partition(",")[2]}
        if fmt == "url":
            return {"url": image}
        return {"b64_json": base64.b64encode(await self._download(image)).decode()}

    async def _download(self, url: str) -> bytes:
        from ._fetch import fetch

        loop = asyncio.get_running_loop()
        fetched = await fetch(self.state.transport, url=url, record=None, deadline=loop.time() + 60.0)
        if fetched.status != 200:
            raise GatewayError(502, f"the image at {url} answered HTTP {fetched.status}", "provider_error")
        return fetched.content


class _Coalescer:
    """Writes SSE events in batches. A provider yields the events of one network read back to back, with no
    loop iteration between them; a writer task wakes once they stop and sends all that piled up in one write,
    instead of one write (and one send) per event. A full buffer makes the producer wait (``drain``).
    """

    LIMIT = 1 << 20  # bytes buffered before the producer waits for the client

    def __init__(self, response: web.StreamResponse) -> None:
        self._response = response
        self._buffer: list[bytes] = []
        self._size = 0
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._run())

    @property
    def full(self) -> bool:
        """True when the producer should wait for the client (``drain``)."""
        return self._size > self.LIMIT

    def add(self, data: bytes) -> None:
        """Queue one event (no I/O here); raises once the client is gone."""
        if self._task.done():
            self._task.result()  # raises the writer's error (the client went away)
            raise ConnectionResetError("the stream is closed")
        self._buffer.append(data)
        self._size += len(data)
        self._wake.set()

    async def drain(self) -> None:
        """Wait until the writer has taken the buffer."""
        self._drained.clear()
        waiter = asyncio.ensure_future(self._drained.wait())
        await asyncio.wait([waiter, self._task], return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if self._task.done():
            self._task.result()

    async def close(self) -> None:
        """Send what is left with the end of the body: one write (and one send) for a short answer."""
        self._closing = True
        self._wake.set()
        await self._task
        rest, self._buffer = b"".join(self._buffer), []
        await self._response.write_eof(rest)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._closing:
                return  # what is left goes out with the end of the body
            if self._buffer:
                data = b"".join(self._buffer)
                self._buffer.clear()
                self._size = 0
                self._drained.set()
                await self._response.write(data)


def _is_provider_error(exc: BaseException) -> bool:
    from providers import ProviderError

    return isinstance(exc, ProviderError | TimeoutError | ValueError)


def _number(body: Mapping[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GatewayError(400, f"'{key}' must be a number", f"invalid_{key}")
    return float(value)


def _integer(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GatewayError(400, f"'{key}' must be a positive integer", f"invalid_{key}")
    return value


def _usage(usage: Any) -> dict[str, int]:
    if usage is None:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex
