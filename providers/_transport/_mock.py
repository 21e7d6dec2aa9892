"""``MockTransport``: a function answers every request, for tests of the logic above the transport."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Union

from ._protocol import Request

Handler = Callable[[Request], Union["MockResponse", Awaitable["MockResponse"]]]


class MockResponse:
    """A canned answer: a status, headers and a body (bytes, or an async iterator of chunks for a stream).

    Args:
        status: the HTTP status code.
        headers: a mapping, or (name, value) pairs where a name may repeat (``Set-Cookie``).
        body: the whole body, or an async iterable whose chunks are delivered one ``receive()`` each; an
            exception it raises reaches the reader, as a broken stream does.
    """

    def __init__(
        self,
        status: int = 200,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        body: bytes | AsyncIterable[bytes] = b"",
        *,
        url: str = "",
    ) -> None:
        self._status = status
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
        self._pairs = [(name.lower(), value) for name, value in pairs]
        self._body = body
        self._chunks: AsyncIterator[bytes] | None = None
        self._done = False
        self.closed = False
        self.url = url

    @property
    def status(self) -> int:
        """The HTTP status code."""
        return self._status

    @property
    def headers(self) -> Mapping[str, str]:
        """Header fields with lower-case names; a repeated field keeps its last value."""
        return dict(self._pairs)

    @property
    def set_cookies(self) -> list[str]:
        """The raw ``Set-Cookie`` header values, in order."""
        return [value for name, value in self._pairs if name == "set-cookie"]

    def header(self, name: str) -> str | None:
        """One header field's value (the last if repeated)."""
        return self.headers.get(name.lower())

    async def receive(self) -> bytes:
        """The next chunk of the body, or ``b""`` at the end."""
        if self._done or self.closed:
            return b""
        body = self._body
        if isinstance(body, bytes):
            self._done = True
            return body
        if self._chunks is None:
            self._chunks = aiter(body)
        while True:
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                self._done = True
                return b""
            if chunk:
                return chunk

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Yield the body chunk by chunk."""
        while data := await self.receive():
            yield data

    async def aread(self) -> bytes:
        """Read the whole body."""
        return b"".join([chunk async for chunk in self.aiter_bytes()])

    async def aclose(self) -> None:
        """Close the response; an unread stream is closed too."""
        if self.closed:
            return
        self.closed = True
        chunks = self._chunks
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()

    async def __aenter__(self) -> MockResponse:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class MockTransport:
    """An ``AsyncTransport`` whose answers come from ``handler(request)`` (a function or a coroutine function).

    Every request is kept in ``requests``, in order, for assertions. The handler may raise a ``TransportError``
    to play a network failure.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.closed = False

    async def handle_request(self, request: Request) -> MockResponse:
        """Record ``request`` and return the handler's answer."""
        if self.closed:
            raise RuntimeError("the transport is closed")
        self.requests.append(request)
        answer = self.handler(request)
        if inspect.isawaitable(answer):
            answer = await answer
        assert isinstance(answer, MockResponse), f"the handler returned {answer!r}, not a MockResponse"
        if not answer.url:
            answer.url = request.url
        return answer

    async def aclose(self) -> None:
        """Close the transport; later requests raise ``RuntimeError``."""
        self.closed = True
