"""Errors raised by the provider clients.

Every operational failure has one root, so a caller can catch them all::

    ProviderError
    ├── ResponseStatusError      the API answered with an error status (status, short body)
    │   ├── CloudflareError      a challenge page: the session's clearance is missing or stale
    │   └── RateLimitError       429 Too Many Requests (retry_after, when the server said)
    ├── MissingAuthError         no usable session and none could be harvested here
    ├── ModelNotFoundError       an unknown model name (closest known names attached)
    ├── StreamError              a stream that was cut short, malformed, or carried an error event
    └── TransportError           the request never got an HTTP answer
        ├── ConnectError         DNS, refused connection, TLS or proxy failure
        └── ProviderTimeout      the idle timeout or the total deadline passed

Misuse (a closed transport, a bad argument) is a ``RuntimeError`` or ``ValueError``, never a ``ProviderError``,
so ``except ProviderError`` does not swallow a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

_BODY_LIMIT = 300


def short_body(body: bytes | str, limit: int = _BODY_LIMIT) -> str:
    """Return the start of a response body as one readable line, for error messages."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes | bytearray) else body
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ProviderError(Exception):
    """Root of every error the provider clients raise."""

    def __init__(self, message: str, *, provider: str | None = None, url: str | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.url = url


class ResponseStatusError(ProviderError):
    """The API answered with a 4xx or 5xx status before any output."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        body: str = "",
        provider: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, url=url)
        self.status = status
        self.body = body


class CloudflareError(ResponseStatusError):
    """A Cloudflare challenge page answered instead of the API: the clearance must be harvested again."""


class RateLimitError(ResponseStatusError):
    """The API is rate limiting this client (429); ``retry_after`` holds the server's hint in seconds."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 429,
        body: str = "",
        retry_after: float | None = None,
        provider: str | None = None,
        url: str | None = None,
    ) -> None:
        super().__init__(message, status=status, body=body, provider=provider, url=url)
        self.retry_after = retry_after


class MissingAuthError(ProviderError):
    """No usable session is cached and none could be harvested from here; the message names the command."""


class ModelNotFoundError(ProviderError):
    """The model name is neither a known model nor an alias of one."""

    def __init__(self, model: str, known: Iterable[str], *, provider: str | None = None) -> None:
        known = list(dict.fromkeys(known))
        self.model = model
        self.closest = difflib.get_close_matches(model, known, n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(map(repr, self.closest))}?" if self.closest else ""
        where = f" for {provider}" if provider else ""
        super().__init__(f"unknown model {model!r}{where}{hint}", provider=provider)


class StreamError(ProviderError):
    """The response stream was truncated, malformed, or carried an error event."""


class TransportError(ProviderError):
    """The request failed below HTTP: no status was received, or the body transfer broke."""


class ConnectError(TransportError):
    """Could not reach the server: DNS, a refused connection, TLS or the proxy failed."""


class ProviderTimeout(TransportError):
    """The idle timeout or the total deadline passed."""

    def __init__(
        self, message: str, *, deadline_passed: bool = False, provider: str | None = None, url: str | None = None
    ) -> None:
        super().__init__(message, provider=provider, url=url)
        #: True when the call's total deadline passed (never retried); False for curl's idle timeout.
        self.deadline_passed = deadline_passed
