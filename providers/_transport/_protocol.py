"""What a transport is: ``Request`` in, a streaming ``Response`` out (``AsyncTransport``), and nothing else.

Headers, cookies, retries and healing belong to the client (``providers._client``); a transport knows only
URLs, header lines and bytes, and raises the ``TransportError`` family (never a library's own errors).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(slots=True)
class Request:
    """What the transport sends. ``headers`` are sent exactly as given, in order, and nothing else."""

    method: str
    url: str
    headers: Sequence[tuple[str, str]] = ()
    body: bytes | None = None
    proxy: str | None = field(default=None, repr=False)  # may carry a password
    impersonate: str | None = None
    #: Seconds without a byte (connect included) before ``ProviderTimeout``. Not curl's low-speed check, which
    #: averages over several seconds and so never fires for a stream that sent a burst and then went quiet.
    idle_timeout: float = 60.0
    #: Absolute ``loop.time()`` after which the whole exchange is abandoned with ``ProviderTimeout``.
    deadline: float | None = None


@runtime_checkable
class Response(Protocol):
    """A response whose body is read as it arrives. Always ``aclose()`` it (``async with`` does)."""

    url: str

    @property
    def status(self) -> int:
        """The HTTP status code."""
        ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Header fields with lower-case names; a repeated field keeps its last value."""
        ...

    @property
    def set_cookies(self) -> list[str]:
        """The raw ``Set-Cookie`` header values, in order."""
        ...

    def header(self, name: str) -> str | None:
        """One header field's value (the last if repeated)."""
        ...

    async def receive(self) -> bytes:
        """The body bytes that arrived since the last call (waiting for some), or ``b""`` at the end."""
        ...

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Yield the body as it arrives."""
        ...

    async def aread(self) -> bytes:
        """Read the whole body."""
        ...

    async def aclose(self) -> None:
        """Close the response, aborting an unfinished transfer."""
        ...

    async def __aenter__(self) -> Response: ...

    async def __aexit__(self, *exc_info: object) -> None: ...


@runtime_checkable
class AsyncTransport(Protocol):
    """Moves one request's bytes out and its response's bytes in. ``providers.Client`` takes any implementation.

    Implemented by ``CurlTransport`` (the default: curl_cffi with a browser's TLS fingerprint) and
    ``MockTransport`` (a function answers, for tests of the logic above the transport).
    """

    async def handle_request(self, request: Request) -> Response:
        """Send ``request`` and return once the status and headers are known; the body streams after.

        Raises:
            TransportError (ConnectError, ProviderTimeout, StreamError): the exchange failed.
            RuntimeError: the transport is closed.
        """
        ...

    async def aclose(self) -> None:
        """Close the transport and its connections; open responses end with a ``TransportError``."""
        ...
