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
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from json.encoder import encode_basestring  # type: ignore[attr-defined]
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from aiohttp import web

from harvester.daemon._logging import log_event
from providers._registry import PROVIDERS
from providers._types import FinishReason, ImageResponse, Reasoning, Usage

from ._app import BadRequest, error_response
from ._events import EventStream

if TYPE_CHECKING:
    from providers import Provider

    from ._app import ServeState

logger = logging.getLogger("harvest.serve")

#: Request fields the gateway reads itself; every other one goes to the provider like ``extra_body``.
_OWN_FIELDS = frozenset({"model", "messages", "stream", "temperature", "max_tokens", "stream_options", "n", "user"})
MODELS_TIMEOUT = 10.0  # seconds for a provider's live model list before its built-in list is used
_DONE = b"data: [DONE]\n\n"
_OPEN_TAIL = '},"finish_reason":null}]}\n\n'  # closes a delta object and the chunk of an unfinished answer
_ONLY_TEXT = {str}
#: Items that end an answer: they send nothing themselves, their content goes into the last chunk.
_END_TYPES = (FinishReason, Usage)
#: A str as a JSON string (with its quotes; non-ASCII kept): the json module's C function behind json.dumps.
_quote: Callable[[str], str] = encode_basestring


class ChatCall(NamedTuple):
    """A chat request, checked: what ``Gateway.open_chat`` sends."""

    provider: type[Provider]
    model: str
    messages: list[Any]
    stream: bool
    temperature: float | None
    max_tokens: int | None
    extra: dict[str, Any]

    @property
    def answer_model(self) -> str:
        """The model as the answer names it: ``provider/model``."""
        return f"{self.provider.name()}/{self.model}"


async def first_batch(
    batches: AsyncIterator[Sequence[Any]],
) -> tuple[AsyncIterator[Sequence[Any]], Sequence[Any] | None]:
    """The stream's iterator and its first batch (None: no items), before any byte is sent: an error now (the
    provider's, raised from here) is still a plain HTTP error."""
    iterator = aiter(batches)
    try:
        return iterator, await anext(iterator)
    except StopAsyncIteration:
        return iterator, None


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
        timeout: float,
    ) -> AsyncIterator[Sequence[Any]]:
        """The answer's items in batches: those of one network read together (see ``Client.chat_batches``)."""
        return self.client(provider).chat_batches(  # type: ignore[no-any-return]
            messages,
            model,
            stream=stream,
            timeout=timeout,
            temperature=temperature,
            max_tokens=max_tokens,
            extra_body=extra_body or None,
        )

    async def models(self, provider: type[Provider]) -> list[str]:
        return await self.client(provider).models()  # type: ignore[no-any-return]

    async def image(
        self, provider: type[Provider], prompt: str, model: str | None, extra_body: Mapping[str, Any], timeout: float
    ) -> Any:
        if not provider.image_models:
            raise GatewayError(400, f"{provider.name()} does not generate images", "unsupported_model")
        return await self.client(provider).image(prompt, model, extra_body=extra_body or None, timeout=timeout)

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
            call = self.parse_chat(await self.state.read_json(request))
            batches = self.open_chat(call)
            if call.stream:
                iterator, batch = await first_batch(batches)
                events = EventStream(request)
                await self.pump(events, batches, iterator, batch, call.answer_model)
                return events.response
            return await self._complete(batches, call.answer_model)
        except GatewayError as exc:
            return exc.response(request.path)
        except BadRequest:
            raise
        except Exception as exc:
            if not _is_provider_error(exc):
                raise
            return translate(exc).response(request.path)

    def parse_chat(self, body: Any) -> ChatCall:
        """The chat request a JSON body asks for.

        Raises:
            GatewayError: not an object, no usable model or messages, a bad number (400 or 404).
        """
        if not isinstance(body, dict):
            raise GatewayError(400, "the request body must be a JSON object", "invalid_request")
        provider, model = self.resolve(body.get("model"))
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise GatewayError(400, "'messages' must be a non-empty list of message objects", "invalid_messages")
        return ChatCall(
            provider,
            model,
            messages,
            bool(body.get("stream")),
            _number(body, "temperature"),
            _integer(body, "max_tokens"),
            {k: v for k, v in body.items() if k not in _OWN_FIELDS},
        )

    def open_chat(self, call: ChatCall) -> AsyncIterator[Sequence[Any]]:
        """The answer's items in batches (nothing is sent before the first ``anext``)."""
        return self.clients.chat(
            call.provider,
            call.model,
            call.messages,
            stream=call.stream,
            temperature=call.temperature,
            max_tokens=call.max_tokens,
            extra_body=call.extra,
            timeout=self.state.limits.provider_timeout,
        )

    async def _complete(self, batches: AsyncIterator[Sequence[Any]], model: str) -> web.Response:
        text: list[str] = []
        reasoning: list[str] = []
        usage: Usage | None = None
        finish = "stop"
        items = [item async for batch in batches for item in batch]
        for item in items:
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

    async def pump(
        self,
        events: EventStream,
        batches: AsyncIterator[Sequence[Any]],
        iterator: AsyncIterator[Sequence[Any]],
        batch: Sequence[Any] | None,
        model: str,
    ) -> None:
        """Send a stream whose first batch (``first_batch``) came: every batch, then the end (or an error event).

        The provider's response is closed before this returns. ``ConnectionError`` (the client left) is not raised.
        """
        chunks = _ChunkEncoder(model)
        write = events.write
        held = end = b""
        try:
            # One write per provider read: the items that arrived together leave together, in one send (the
            # first with the head). Once the answer has its finish reason, only the end is to come: the rest
            # is held and leaves with it.
            data = chunks.start + chunks.encode(batch) if batch is not None else chunks.start
            while True:
                if chunks.finished:
                    held += data
                elif data:
                    await write(data)  # waits only when the client is slower than the provider
                batch = await anext(iterator, None)
                if batch is None:
                    break
                data = chunks.encode(batch)
            end = held + chunks.end()
        except ConnectionError:
            logger.debug("serve.stream.client_left")  # the client went away: nobody to tell, nothing to log loudly
            end = b""
        except Exception as exc:
            if not _is_provider_error(exc):
                logger.exception("serve.stream.internal_error")
                exc = GatewayError(500, "internal error in harvest serve (please report this)", "internal_error")
            error = exc if isinstance(exc, GatewayError) else translate(exc)
            end = held + error.event() + _DONE
        finally:
            closing = getattr(batches, "aclose", None)
            if closing is not None:
                await closing()  # the provider's response is closed now, not when the generator is collected
            try:
                events.end(end)
            except ConnectionError:
                pass  # a client that left mid-stream is not a server error

    # -- POST /v1/images/generations ---------------------------------------------------------------------------

    async def images(self, request: web.Request) -> web.Response:
        """Images for a prompt (DeepInfra by default), as ``url`` or ``b64_json`` per ``response_format``."""
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
            result = await self.clients.image(
                provider, prompt, model or None, extra, self.state.limits.provider_timeout
            )
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


class _ChunkEncoder:
    """``chat.completion.chunk`` events from the provider's items, as one ``bytes`` per batch.

    The JSON around a delta is built once per answer; a batch of text deltas is then a ``str.join`` over the
    quoted texts and one UTF-8 encode, with no Python-level loop. The texts are quoted by the json module's C
    quoter, not ``orjson.dumps``: orjson's fixed cost per call (measured here: ~3.5 us for a short string) was
    most of an item's encoding time, and its output for a string is the same JSON.
    """

    __slots__ = ("_between", "_content", "_head", "_reasoning", "_usage", "finish", "finished", "start")

    def __init__(self, model: str) -> None:
        head = (
            f'data: {{"id":"{_completion_id()}","object":"chat.completion.chunk","created":{int(time.time())},'
            f'"model":{_quote(model)},"choices":[{{"index":0,"delta":'
        )
        self._head = head
        self._content = head + '{"content":'
        self._reasoning = head + '{"reasoning_content":'
        self._between = _OPEN_TAIL + self._content  # from one text delta's quoted text to the next one's
        self.start = (head + '{"role":"assistant","content":""' + _OPEN_TAIL).encode()
        self.finish = "stop"
        self.finished = False  # a finish reason came: the answer is complete but for its usage and the end
        self._usage: Any = None

    def encode(self, batch: Sequence[Any]) -> bytes:
        """The events of one batch of items (``b""`` when none of them is sent as an event)."""
        # The common batches: text deltas only, or text deltas and then the answer's end (its finish reason
        # and usage, which are sent with the last chunk): a small answer often comes in one read.
        texts = batch
        if batch and type(batch[-1]) is not str:
            end = len(batch)
            while end and type(batch[end - 1]) in _END_TYPES:
                end -= 1
            texts = batch[:end]
            for item in batch[end:]:
                self._take_end(item)
        if _ONLY_TEXT == set(map(type, texts)):
            return (self._content + self._between.join(map(_quote, texts)) + _OPEN_TAIL).encode()
        if not texts:
            return b""
        parts: list[str] = []
        append = parts.append
        for item in texts:
            if isinstance(item, str):
                append(self._content)
                append(_quote(str(item)))
                append(_OPEN_TAIL)
            elif isinstance(item, Reasoning):
                append(self._reasoning)
                append(_quote(item.text))
                append(_OPEN_TAIL)
            elif isinstance(item, ImageResponse):
                append(self._content)
                append(_quote("\n".join(f"![image]({url})" for url in item.images)))
                append(_OPEN_TAIL)
            else:
                self._take_end(item)
        return "".join(parts).encode()

    def _take_end(self, item: Any) -> None:
        if isinstance(item, Usage):
            self._usage = item
        elif isinstance(item, FinishReason):
            self.finish = item.reason
            self.finished = True

    def end(self) -> bytes:
        """The last chunk (``finish_reason`` and ``usage``) and ``[DONE]``."""
        usage = _usage(self._usage)
        return (
            f'{self._head}{{}},"finish_reason":{_quote(self.finish)}}}],"usage":{{'
            f'"prompt_tokens":{usage["prompt_tokens"]:d},"completion_tokens":{usage["completion_tokens"]:d},'
            f'"total_tokens":{usage["total_tokens"]:d}}}}}\n\n'
        ).encode() + _DONE


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
    """A completion id unique in this process (a random prefix per process and a counter; no syscall per id)."""
    return f"chatcmpl-{_ID_PREFIX}{next(_ID_COUNTER):010x}"


_ID_PREFIX = uuid.uuid4().hex[:22]
_ID_COUNTER = itertools.count(1)
