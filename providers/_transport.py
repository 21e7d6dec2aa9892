"""The transport: moves request bytes out and response bytes in over curl_cffi, and nothing else.

Headers, cookies, retries and healing belong to the client layer (``_client.py``); this module knows only
URLs, header lines and bytes. It is also the one place where curl_cffi's errors become ``ProviderError``s.

One ``curl_cffi.requests.AsyncSession`` per event loop holds the pool of curl handles and the curl multi
handle, whose connection cache keeps connections warm across calls. We borrow its handles and set the few
options we need ourselves rather than going through ``AsyncSession.request``: that keeps the per-request
cost low, lets us send exactly the headers we choose (curl_cffi's default headers and its default User-Agent
never leak: we impersonate with ``default_headers=False``), and lets an early close abort the transfer at once
instead of waiting, as ``Response.aclose()`` does, for the server to finish.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from curl_cffi import Curl, CurlError, CurlOpt
from curl_cffi._wrapper import ffi, lib
from curl_cffi.const import CurlECode
from curl_cffi.curl import CURL_WRITEFUNC_ERROR
from curl_cffi.requests import AsyncSession
from curl_cffi.requests.impersonate import resolve_latest_browser_type

from ._exceptions import ConnectError, ProviderError, ProviderTimeout, StreamError, TransportError

#: Enough handles that 50+ concurrent streams never queue for one; each is created lazily.
_MAX_CLIENTS = 128
#: How long an early close may take before we give up waiting for curl to let go of the handle.
_CLOSE_TIMEOUT = 1.0

# curl error code -> the error raised when it happens before any response (connect phase). The test
# ``test_every_curl_error_is_mapped`` checks that every code curl_cffi knows is covered.
_CONNECT_ERRORS: dict[int, type[TransportError]] = {
    CurlECode.COULDNT_RESOLVE_PROXY: ConnectError,
    CurlECode.COULDNT_RESOLVE_HOST: ConnectError,
    CurlECode.COULDNT_CONNECT: ConnectError,
    CurlECode.SSL_CONNECT_ERROR: ConnectError,
    CurlECode.PEER_FAILED_VERIFICATION: ConnectError,
    CurlECode.SSL_CERTPROBLEM: ConnectError,
    CurlECode.SSL_CIPHER: ConnectError,
    CurlECode.SSL_CACERT_BADFILE: ConnectError,
    CurlECode.SSL_CRL_BADFILE: ConnectError,
    CurlECode.SSL_ISSUER_ERROR: ConnectError,
    CurlECode.SSL_PINNEDPUBKEYNOTMATCH: ConnectError,
    CurlECode.SSL_INVALIDCERTSTATUS: ConnectError,
    CurlECode.SSL_ENGINE_NOTFOUND: ConnectError,
    CurlECode.SSL_ENGINE_SETFAILED: ConnectError,
    CurlECode.SSL_ENGINE_INITFAILED: ConnectError,
    CurlECode.SSL_CLIENTCERT: ConnectError,
    CurlECode.ECH_REQUIRED: ConnectError,
    CurlECode.QUIC_CONNECT_ERROR: ConnectError,
    CurlECode.PROXY: ConnectError,
    CurlECode.INTERFACE_FAILED: ConnectError,
    CurlECode.REMOTE_ACCESS_DENIED: ConnectError,
    CurlECode.OPERATION_TIMEDOUT: ProviderTimeout,
    # The server dropped or garbled the exchange before answering: retryable like a refused connection.
    CurlECode.GOT_NOTHING: TransportError,
    CurlECode.SEND_ERROR: TransportError,
    CurlECode.RECV_ERROR: TransportError,
    CurlECode.WEIRD_SERVER_REPLY: TransportError,
    CurlECode.HTTP2: TransportError,
    CurlECode.HTTP2_STREAM: TransportError,
    CurlECode.HTTP3: TransportError,
    CurlECode.PARTIAL_FILE: TransportError,
    CurlECode.BAD_CONTENT_ENCODING: TransportError,
    CurlECode.WRITE_ERROR: TransportError,
    CurlECode.READ_ERROR: TransportError,
    CurlECode.SEND_FAIL_REWIND: TransportError,
    CurlECode.TOO_MANY_REDIRECTS: TransportError,
    CurlECode.HTTP_RETURNED_ERROR: TransportError,
    CurlECode.OUT_OF_MEMORY: TransportError,
}
# Codes that mean a bug or a bad argument on our side, not a network failure.
_MISUSE_CODES = {
    0,
    CurlECode.UNSUPPORTED_PROTOCOL,
    CurlECode.URL_MALFORMAT,
    CurlECode.UNKNOWN_OPTION,
    CurlECode.SETOPT_OPTION_SYNTAX,
}


def translate_curl_error(exc: CurlError, *, url: str, in_body: bool) -> Exception:
    """Map a curl_cffi error to our tree: the one place third-party errors are translated.

    Args:
        exc: the error curl_cffi raised (a ``CurlError`` or a ``curl_cffi.requests`` exception).
        url: the request URL, for the message.
        in_body: True once the response status was received; a break then is a truncated stream.
    """
    code = int(getattr(exc, "code", 0) or 0)
    message = f"{url}: {exc}"
    if code in _MISUSE_CODES:
        return ValueError(message)
    if code == CurlECode.OPERATION_TIMEDOUT:
        return ProviderTimeout(f"{url}: no data within the idle timeout", url=url)
    if in_body:
        return StreamError(f"{url}: the stream broke off: {exc}", url=url)
    return _CONNECT_ERRORS.get(code, TransportError)(message, url=url)


@dataclass(slots=True)
class Request:
    """What the transport sends. ``headers`` are sent exactly as given, in order, and nothing else."""

    method: str
    url: str
    headers: Sequence[tuple[str, str]] = ()
    body: bytes | None = None
    proxy: str | None = None
    impersonate: str | None = None
    #: Seconds without a byte (connect included) before ``ProviderTimeout``; curl enforces it.
    idle_timeout: float = 60.0
    #: Absolute ``loop.time()`` after which the whole exchange is abandoned with ``ProviderTimeout``.
    deadline: float | None = None


@dataclass(slots=True)
class _Headers:
    """The response's status line and header fields, as curl delivered them."""

    status: int = 0
    lines: list[bytes] = field(default_factory=list)

    def add(self, line: bytes) -> int:
        if line[:5] == b"HTTP/":
            # A new status line (after a 100 Continue, or a proxy's CONNECT answer) starts a new header block.
            self.lines.clear()
            parts = line.split(None, 2)
            self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        elif line not in (b"\r\n", b"\n"):
            self.lines.append(line)
        return len(line)


class Response:
    """A response whose body is read as it arrives. Always ``aclose()`` it (``async with`` does)."""

    __slots__ = (
        "_chunks",
        "_closing",
        "_curl",
        "_done",
        "_error",
        "_future",
        "_header_block",
        "_headers",
        "_loop",
        "_started",
        "_timer",
        "_transport",
        "_waiter",
        "url",
    )

    def __init__(self, transport: Transport, curl: Curl, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._curl: Curl | None = curl
        self._loop = loop
        self.url = url
        self._header_block = _Headers()
        self._headers: dict[str, str] | None = None
        self._chunks: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._future: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._started = False  # the first body byte (or the end) has arrived, so the headers are final
        self._done = False
        self._closing = False
        self._error: BaseException | None = None

    # -- curl callbacks (run inside the event loop, from curl's socket handling) -------------------------

    def _on_header(self, line: bytes) -> int:
        return self._header_block.add(line)

    def _on_body(self, chunk: bytes) -> int:
        if self._closing:
            return CURL_WRITEFUNC_ERROR  # makes curl abort the transfer
        self._started = True
        self._chunks.append(chunk)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return len(chunk)

    def _on_done(self, future: asyncio.Future[None]) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
        if not future.cancelled() and (exc := future.exception()) is not None and self._error is None:
            if isinstance(exc, CurlError):
                self._error = translate_curl_error(exc, url=self.url, in_body=self._started)
            else:
                self._error = exc
        self._release()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_deadline(self) -> None:
        self._error = ProviderTimeout(f"{self.url}: the total deadline passed", deadline_passed=True, url=self.url)
        self._abort()

    # -- public API ---------------------------------------------------------------------------------------

    @property
    def status(self) -> int:
        """The HTTP status code."""
        return self._header_block.status

    @property
    def headers(self) -> Mapping[str, str]:
        """Header fields with lower-case names; a repeated field keeps its last value."""
        if self._headers is None:
            headers: dict[str, str] = {}
            for line in self._header_block.lines:
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            self._headers = headers
        return self._headers

    @property
    def set_cookies(self) -> list[str]:
        """The raw ``Set-Cookie`` header values, in order."""
        values = []
        for line in self._header_block.lines:
            if line[:11].lower() == b"set-cookie:":
                values.append(line[11:].decode("latin-1").strip())
        return values

    async def _wait(self) -> None:
        """Wait until curl delivers more body bytes or finishes."""
        self._waiter = self._loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def _start(self) -> None:
        """Wait until the status and headers are final: the first body byte, or the end of the transfer."""
        while not self._started and not self._done:
            await self._wait()
        if not self._started and self._error is not None:
            raise self._error

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Yield the body as it arrives; chunks that arrived together are joined into one."""
        chunks = self._chunks
        while True:
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                yield data
            elif self._done:
                if self._error is not None:
                    raise self._error
                return
            else:
                await self._wait()

    async def aread(self) -> bytes:
        """Read the whole body."""
        return b"".join([chunk async for chunk in self.aiter_bytes()])

    def _abort(self) -> None:
        """Stop the transfer now: remove the handle from curl, which drops its connection, and wake readers."""
        if self._done:
            return
        self._closing = True
        curl = self._curl
        if curl is not None:
            # Cancels the transfer's future; ``_on_done`` then releases the handle back to the pool.
            self._transport._session.acurl.remove_handle(curl)
        if self._future is not None and not self._future.done():
            self._future.cancel()

    def _release(self) -> None:
        curl, self._curl = self._curl, None
        if curl is not None:
            self._transport._release(curl)

    async def aclose(self) -> None:
        """Close the response, aborting an unfinished transfer at once; the pooled session stays usable."""
        if not self._done:
            self._abort()
            if self._future is not None and not self._future.done():
                await asyncio.wait({self._future}, timeout=_CLOSE_TIMEOUT)
        self._release()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class Transport:
    """Sends requests over the curl_cffi session of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._session: AsyncSession[Any] = AsyncSession(loop=loop, max_clients=_MAX_CLIENTS)
        self._closed = False

    async def handle_request(self, request: Request) -> Response:
        """Send ``request`` and return once the status and headers are known; the body streams after."""
        if self._closed:
            raise RuntimeError("the transport is closed")
        curl = await self._session.pop_curl()
        response = Response(self, curl, request.url, self._loop)
        try:
            _set_options(curl, request, response)
            future = self._session.acurl.add_handle(curl)
        except BaseException:
            response._curl = None
            self._release(curl)
            raise
        response._future = future
        future.add_done_callback(response._on_done)
        if request.deadline is not None:
            response._timer = self._loop.call_at(request.deadline, response._on_deadline)
        try:
            await response._start()
        except BaseException:
            await response.aclose()
            raise
        return response

    def _release(self, curl: Curl) -> None:
        """Reset a handle and put it back in the pool (or free it once the session is closed)."""
        curl.clean_handles_and_buffers()
        if self._closed:
            curl.close()
            return
        try:
            self._session.acurl.remove_handle(curl)
        except CurlError:
            pass  # already removed by curl when the transfer finished
        curl.reset()
        self._session.push_curl(curl)

    async def aclose(self) -> None:
        """Close the session and its connections."""
        if not self._closed:
            self._closed = True
            await self._session.close()


def _set_options(curl: Curl, request: Request, response: Response) -> None:
    """Set exactly what one request needs on a freshly reset handle.

    Plain string and number options go straight to ``curl_easy_setopt``: ``Curl.setopt`` builds a dict and
    walks a chain of branches per call, which was a tenth of a small request's client time.
    """
    handle = curl._curl
    if request.impersonate:
        target = resolve_latest_browser_type(request.impersonate)
        # default_headers=False: the TLS and HTTP/2 fingerprint only; never curl_cffi's UA or headers.
        if curl.impersonate(target, default_headers=False) != 0:
            raise ProviderError(
                f"curl_cffi cannot impersonate {request.impersonate!r}; update curl_cffi or harvest again"
            )
        _setopt(handle, CurlOpt.ACCEPT_ENCODING, b"gzip, deflate, br, zstd")
    _setopt(handle, CurlOpt.URL, request.url.encode())  # libcurl copies string options
    method = request.method.upper()
    body = request.body
    if method == "POST" or body is not None:
        body = body or b""
        _setopt(handle, CurlOpt.POSTFIELDSIZE, _long(len(body)))
        _setopt(handle, CurlOpt.COPYPOSTFIELDS, body)  # copied: the bytes may go away before curl sends
    if method not in ("GET", "POST"):
        _setopt(handle, CurlOpt.CUSTOMREQUEST, method.encode())
    # "Expect:" with no value stops curl from adding "Expect: 100-continue" to larger POST bodies.
    lines = [f"{name}: {value}".encode() for name, value in request.headers]
    lines.append(b"Expect:")
    curl.setopt(CurlOpt.HTTPHEADER, lines)
    if request.proxy:
        _setopt(handle, CurlOpt.PROXY, request.proxy.encode())
    timeout = max(1, int(request.idle_timeout))
    _setopt(handle, CurlOpt.CONNECTTIMEOUT_MS, _long(timeout * 1000))
    # curl's idle timeout: abort when fewer than 1 byte/s arrives for `timeout` seconds.
    _setopt(handle, CurlOpt.LOW_SPEED_LIMIT, _ONE)
    _setopt(handle, CurlOpt.LOW_SPEED_TIME, _long(timeout))
    curl.setopt(CurlOpt.HEADERFUNCTION, response._on_header)
    curl.setopt(CurlOpt.WRITEFUNCTION, response._on_body)


def _long(value: int) -> Any:
    """A ``long*`` for curl_cffi's setopt glue, which dereferences number options."""
    return ffi.new("long*", value)


_setopt = lib._curl_easy_setopt
_ONE = _long(1)


# One transport per event loop: curl's multi handle is bound to the loop that created it. Weak keys let a
# finished loop (each ``asyncio.run``) drop its transport with it.
_transports: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Transport] = weakref.WeakKeyDictionary()


def get_transport() -> Transport:
    """Return the running loop's transport, creating it on first use."""
    loop = asyncio.get_running_loop()
    transport = _transports.get(loop)
    if transport is None or transport._closed:
        transport = _transports[loop] = Transport(loop)
    return transport


async def close_transport() -> None:
    """Close the running loop's transport (tests and CLI commands call this before the loop ends)."""
    transport = _transports.pop(asyncio.get_running_loop(), None)
    if transport is not None:
        await transport.aclose()
