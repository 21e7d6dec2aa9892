"""Pure decoding of provider answers: stream bytes and JSON bodies in, typed chunks and errors out.

No I/O here. The streaming decoders take the transport's byte chunks and return lists of items, so the
provider's generator yields each item straight to the caller: no generator layer per event on the hot path.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

import orjson

from ._exceptions import (
    CloudflareError,
    ProviderError,
    RateLimitError,
    ResponseStatusError,
    StreamError,
    short_body,
)
from ._sse import DataStreamDecoder, ServerSentEvent, SSEDecoder, data_stream_part, plain_payloads
from ._types import Chunk, FinishReason, Reasoning, Usage

_CHALLENGE_MARKERS = (b"Just a moment...", b"cf-challenge", b"challenge-platform")
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


def is_challenge(status: int, headers: Mapping[str, str], body: bytes) -> bool:
    """True if the answer is a Cloudflare challenge page rather than the API's own response."""
    if headers.get("cf-mitigated", "").lower() == "challenge":
        return True
    return status in (403, 503) and any(marker in body[:4096] for marker in _CHALLENGE_MARKERS)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _error_message(body: bytes) -> str:
    """The API's own error message from a JSON error body, else the start of the body."""
    try:
        data = _loads(body)
    except _JSONDecodeError:
        return short_body(body)
    if isinstance(data, dict):
        error = data.get("error", data.get("detail", data))
        if isinstance(error, dict):
            error = error.get("message") or error.get("error") or error
        return short_body(str(error))
    return short_body(body)


def error_for_status(
    status: int, headers: Mapping[str, str], body: bytes, *, provider: str, url: str
) -> ResponseStatusError:
    """The typed error for a non-2xx answer: a challenge, a rate limit, or a plain status error."""
    if is_challenge(status, headers, body):
        return CloudflareError(
            f"{provider}: Cloudflare challenge ({status}) at {url}; the session's clearance is missing or stale",
            status=status,
            body=short_body(body),
            provider=provider,
            url=url,
        )
    message = _error_message(body)
    if status == 407:
        return ResponseStatusError(
            f"{provider}: the proxy refused the credentials (407) for {url}; check the user and password in the "
            "proxy URL (the record's, or --proxy)",
            status=status,
            body=message,
            provider=provider,
            url=url,
        )
    if status == 429:
        retry_after = parse_retry_after(headers.get("retry-after"))
        return RateLimitError(
            f"{provider}: rate limited (429) at {url}: {message}",
            body=message,
            retry_after=retry_after,
            provider=provider,
            url=url,
        )
    return ResponseStatusError(
        f"{provider}: HTTP {status} from {url}: {message}", status=status, body=message, provider=provider, url=url
    )


def is_html(content_type: str | None) -> bool:
    """True for an HTML page: never what an API call expects (an event stream or JSON)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media in ("text/html", "application/xhtml+xml")


def looks_like_html(data: bytes) -> bool:
    """True if a body whose type was not given starts as an HTML page or carries a challenge's markers."""
    head = data[:64].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or any(m in data for m in _CHALLENGE_MARKERS)


def error_for_html(status: int, headers: Mapping[str, str], body: bytes, *, provider: str, url: str) -> ProviderError:
    """The error for a 2xx HTML page where an event stream or JSON was expected.

    A challenge page (Cloudflare's header or markers) is a ``CloudflareError``, so it heals as a 403 does; any
    other page (a login wall, a captive portal, an error page) is a ``ProviderError`` naming what came back.
    """
    if headers.get("cf-mitigated", "").lower() == "challenge" or any(m in body for m in _CHALLENGE_MARKERS):
        return CloudflareError(
            f"{provider}: Cloudflare challenge page (HTTP {status}) at {url} instead of the API's answer; "
            "the session's clearance is missing or stale",
            status=status,
            body=short_body(body),
            provider=provider,
            url=url,
        )
    return ProviderError(
        f"{provider}: {url} answered HTTP {status} with an HTML page where an event stream or JSON was expected: "
        f"{short_body(body, 120)}",
        provider=provider,
        url=url,
    )


def _stream_error(data: Any, provider: str) -> StreamError:
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict):
        error = error.get("message") or error
    return StreamError(f"{provider}: the stream reported an error: {short_body(str(error))}", provider=provider)


class OpenAIStreamDecoder:
    """OpenAI ``chat.completion.chunk`` SSE bytes -> text deltas, ``Reasoning``, ``FinishReason``, ``Usage``.

    ``event: error`` and an ``{"error": ...}`` chunk raise ``StreamError``, as does a chunk that is not JSON;
    ``close()`` raises ``StreamError`` when the stream ended before ``[DONE]`` or a finish reason.
    """

    __slots__ = ("_done", "_finished", "_sse", "provider")

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self._sse = SSEDecoder()
        self._done = False
        self._finished = False

    def feed(self, chunk: bytes) -> list[Chunk]:
        """Decode the events completed by ``chunk``."""
        if self._done:
            return []
        blocks, single_lines = self._sse.split(chunk)
        if not blocks:
            return []
        payloads = plain_payloads(blocks, single_lines)
        if payloads is None:
            payloads = self._payloads(self._sse.events(blocks))
        if b"[DONE]" in payloads:
            # Nothing after the end marker counts.
            del payloads[payloads.index(b"[DONE]") :]
            self._done = True
        # The hot loop: no object per event besides orjson's own, and only the lookups the item needs.
        items: list[Chunk] = []
        append = items.append
        for data in payloads:
            try:
                obj = _loads(data)
            except _JSONDecodeError as exc:
                raise StreamError(
                    f"{self.provider}: malformed stream event: {short_body(data, 80)}", provider=self.provider
                ) from exc
            if type(obj) is not dict or "error" in obj:
                raise _stream_error(obj, self.provider)
            choices = obj.get("choices")
            if choices:
                choice = choices[0]
                delta = choice.get("delta")
                if delta:
                    content = delta.get("content")
                    if content:
                        append(content)
                    else:
                        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                        if reasoning:
                            append(Reasoning(reasoning))
                reason = choice.get("finish_reason")
                if reason:
                    self._finished = True
                    append(FinishReason(reason))
            usage = obj.get("usage")
            if usage:
                append(Usage.from_openai(usage))
        return items

    def _payloads(self, events: list[ServerSentEvent]) -> list[bytes]:
        """The data of irregular events (several fields or lines); an ``error`` event before the end raises."""
        payloads: list[bytes] = []
        for event in events:
            if event.data == b"[DONE]":
                payloads.append(event.data)
                break  # nothing after the end marker counts
            if event.event == "error":
                try:
                    data = _loads(event.data)
                except _JSONDecodeError:
                    data = event.data.decode("utf-8", "replace")
                raise _stream_error(data, self.provider)
            payloads.append(event.data)
        return payloads

    def close(self) -> list[Chunk]:
        """Finish the stream; a stream cut before ``[DONE]`` and before any finish reason is an error."""
        self._sse.close()
        if not (self._done or self._finished):
            raise StreamError(f"{self.provider}: the stream ended early (truncated)", provider=self.provider)
        return []


class DataStreamItemDecoder:
    """Vercel AI data-stream bytes (Cloudflare's playground) -> text deltas, ``Reasoning``, finish and usage."""

    __slots__ = ("_finished", "_parts", "provider")

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self._parts = DataStreamDecoder()
        self._finished = False

    def feed(self, chunk: bytes) -> list[Chunk]:
        """Decode the parts completed by ``chunk``."""
        items: list[Chunk] = []
        for line in self._parts.lines(chunk):
            if line[:2] == b"0:":
                # The hot case, a text part, decoded in place.
                try:
                    value = _loads(line[2:])
                except _JSONDecodeError as exc:
                    raise StreamError(
                        f"{self.provider}: malformed data-stream line: {short_body(line, 80)}", provider=self.provider
                    ) from exc
                if value:
                    items.append(value if type(value) is str else str(value))
            else:
                items += self._items([data_stream_part(line)])
        return items

    def close(self) -> list[Chunk]:
        """Finish the stream; one that ended before its finish part is truncated."""
        items = self._items(self._parts.close())
        if not self._finished:
            raise StreamError(f"{self.provider}: the stream ended early (truncated)", provider=self.provider)
        return items

    def _items(self, parts: list[tuple[str, Any]]) -> list[Chunk]:
        items: list[Chunk] = []
        for code, value in parts:
            if code == "0":
                if value:
                    items.append(str(value))
            elif code == "g":
                if value:
                    items.append(Reasoning(str(value)))
            elif code == "3":
                raise _stream_error(value, self.provider)
            elif code in ("e", "d") and isinstance(value, dict):
                if self._finished:
                    continue  # "d" (message finish) repeats what "e" (step finish) said
                self._finished = True
                if value.get("finishReason"):
                    items.append(FinishReason(str(value["finishReason"])))
                if isinstance(value.get("usage"), dict):
                    items.append(Usage.from_vercel(value["usage"]))
        return items


def completion_items(body: bytes, provider: str) -> list[Chunk]:
    """Items of a non-streamed ``chat.completion`` JSON body, in stream order."""
    try:
        obj = _loads(body)
    except _JSONDecodeError as exc:
        raise ProviderError(f"{provider}: the answer is not JSON: {short_body(body, 80)}", provider=provider) from exc
    if not isinstance(obj, dict) or "error" in obj:
        raise _stream_error(obj, provider)
    items: list[Chunk] = []
    choices = obj.get("choices") or []
    if choices:
        choice = choices[0]
        message = choice.get("message") or {}
        reasoning = message.get("reasoning_content") or message.get("reasoning")
        if reasoning:
            items.append(Reasoning(reasoning))
        if message.get("content"):
            items.append(message["content"])
        if choice.get("finish_reason"):
            items.append(FinishReason(choice["finish_reason"]))
    if obj.get("usage"):
        items.append(Usage.from_openai(obj["usage"]))
    return items


def collapse(items: list[Chunk]) -> list[Chunk]:
    """Join consecutive text (and reasoning) pieces, for ``stream=False`` over a streaming endpoint."""
    out: list[Chunk] = []
    for item in items:
        if out and isinstance(item, str) and isinstance(out[-1], str):
            out[-1] += item
        elif out and isinstance(item, Reasoning) and isinstance(out[-1], Reasoning):
            out[-1] = Reasoning(out[-1].text + item.text)
        else:
            out.append(item)
    return out
