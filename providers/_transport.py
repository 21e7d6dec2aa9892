"""The transport: moves request bytes out and response bytes in over curl_cffi, and nothing else.

Headers, cookies, retries and healing belong to the client layer (``_client.py``); this module knows only
URLs, header lines and bytes. It is also the one place where curl_cffi's errors become ``ProviderError``s.

One curl multi handle per event loop (curl_cffi's ``AsyncCurl``, which drives it from the loop's selector)
keeps connections warm across calls, and a pool of curl handles serves the requests. We drive the handles
ourselves rather than through ``AsyncSession.request``, because a small streamed request is dominated by
per-request overhead there:

- a pooled handle keeps its constant options (TLS fingerprint, proxy, CA file, callbacks) from one request
  to the next, and only the URL, body, header list and timeouts are set per request;
- the encoded header list is built once per distinct set of headers (one per record, in practice);
- header lines are appended to a list by curl_cffi's buffer callback, with no Python frame per line;
- a finished transfer is handed to its response inside the same socket event, not through a future and a
  further loop iteration, and a new transfer starts at once instead of on curl's 0 ms timer.

We also send exactly the headers we choose (curl_cffi's default headers and its default User-Agent never
leak: we impersonate with ``default_headers=False``), and an early close aborts the transfer at once instead
of waiting, as ``Response.aclose()`` does, for the server to finish.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from curl_cffi import Curl, CurlError, CurlOpt
from curl_cffi._wrapper import ffi, lib
from curl_cffi.aio import AsyncCurl
from curl_cffi.const import CurlECode, CurlHttpVersion
from curl_cffi.curl import CURL_WRITEFUNC_ERROR
from curl_cffi.requests.impersonate import resolve_latest_browser_type

from ._exceptions import ConnectError, ProviderError, ProviderTimeout, StreamError, TransportError

#: Enough handles that 50+ concurrent streams never queue for one; each is created lazily.
_MAX_CLIENTS = 128

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
    proxy: str | None = field(default=None, repr=False)  # may carry a password
    impersonate: str | None = None
    #: Seconds without a byte (connect included) before ``ProviderTimeout``. Not curl's low-speed check, which
    #: averages over several seconds and so never fires for a stream that sent a burst and then went quiet.
    idle_timeout: float = 60.0
    #: Absolute ``loop.time()`` after which the whole exchange is abandoned with ``ProviderTimeout``.
    deadline: float | None = None


class _HeaderLines(list[bytes]):
    """The raw header lines of one response. curl_cffi's ``buffer_callback`` calls ``write`` per line, and
    ``write`` is ``list.append`` itself, so a header line costs no Python frame."""

    __slots__ = ()
    write = list.append


class _Sink:
    """The userdata behind a curl callback: curl_cffi's callbacks call ``callback`` and store ``exception``."""

    __slots__ = ("callback", "exception")

    def __init__(self) -> None:
        self.callback: Any = None
        self.exception: BaseException | None = None


class _Handle:
    """A pooled curl handle. Its constant options (fingerprint, proxy, CA file, callbacks) are set once per
    ``key`` and survive between requests: only the URL, body, headers and timeouts change per request."""

    __slots__ = ("body", "body_ref", "curl", "fresh", "header_ref", "headers", "key", "ptr")

    def __init__(self) -> None:
        self.curl = Curl()
        self.ptr = self.curl._curl
        self.key: tuple[str | None, str | None] | None = None  # None: (re)configure before the next request
        self.fresh = True  # no option set yet, so nothing to reset
        self.body = _Sink()  # its callback is the current response's ``_on_body``
        self.headers = _Sink()  # its callback is the current response's ``_HeaderLines``
        # The C side holds only these pointers; keeping them here keeps the sinks alive.
        self.body_ref = ffi.new_handle(self.body)
        self.header_ref = ffi.new_handle(self.headers)

    def configure(self, request: Request) -> None:
        """Set the options that stay the same for every request with this handle's key."""
        curl, handle = self.curl, self.ptr
        if not self.fresh:
            curl.reset()  # also drops whatever a failed request left half set
        self.fresh = False
        self.key = None
        if request.impersonate:
            target = resolve_latest_browser_type(request.impersonate)
            # default_headers=False: the TLS and HTTP/2 fingerprint only; never curl_cffi's UA or headers.
            if curl.impersonate(target, default_headers=False) != 0:
                raise ProviderError(
                    f"curl_cffi cannot impersonate {request.impersonate!r}; update curl_cffi or harvest again"
                )
            _setopt(handle, CurlOpt.ACCEPT_ENCODING, b"gzip, deflate, br, zstd")
            # HTTP/2 over TLS only, as browsers do: never an "Upgrade: h2c" offer on a cleartext connection.
            _setopt(handle, CurlOpt.HTTP_VERSION, _long(CurlHttpVersion.V2TLS))
        if request.proxy:
            _setopt(handle, CurlOpt.PROXY, request.proxy.encode())
            # The proxy the record was harvested through is the one to use for every host: without this,
            # libcurl would still honour $no_proxy and send some hosts directly, from another IP.
            _setopt(handle, CurlOpt.NOPROXY, b"")
        curl._ensure_cacert()
        _setopt(handle, CurlOpt.WRITEFUNCTION, lib.write_callback)
        _setopt(handle, CurlOpt.WRITEDATA, self.body_ref)
        _setopt(handle, CurlOpt.HEADERFUNCTION, lib.buffer_callback)
        _setopt(handle, CurlOpt.HEADERDATA, self.header_ref)
        self.key = (request.impersonate, request.proxy)


class Response:
    """A response whose body is read as it arrives. Always ``aclose()`` it (``async with`` does)."""

    __slots__ = (
        "_chunks",
        "_closing",
        "_deadline",
        "_done",
        "_error",
        "_handle",
        "_headers",
        "_heard",
        "_idle",
        "_last",
        "_lines",
        "_loop",
        "_raw",
        "_slist",
        "_started",
        "_status",
        "_transport",
        "_waiter",
        "url",
    )

    def __init__(self, transport: Transport, handle: _Handle, url: str, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._handle: _Handle | None = handle  # while curl owns the transfer
        self._loop = loop
        self.url = url
        self._raw = _HeaderLines()
        self._status = 0
        self._lines: list[bytes] = []
        self._headers: dict[str, str] | None = None
        self._slist: Any = None  # the header list curl sends; must outlive the transfer
        self._chunks: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._deadline: float | None = None  # the loop time after which the transport's watchdog aborts it
        self._idle = 60.0  # seconds of silence after which the watchdog aborts it
        self._last = _monotonic()  # when a body byte last arrived (or the request started)
        self._heard = 0  # header lines the watchdog saw at its last check
        self._started = False  # the first body byte (or the end) has arrived, so the headers are final
        self._done = False
        self._closing = False
        self._error: BaseException | None = None

    # -- called by curl (inside the event loop, from curl's socket handling) and by the transport ------------

    def _on_body(self, chunk: bytes) -> int:
        if self._closing:
            return CURL_WRITEFUNC_ERROR  # makes curl abort the transfer
        self._started = True
        self._last = _monotonic()
        self._chunks.append(chunk)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return len(chunk)

    def _finish(self, error: BaseException | None) -> None:
        """The transfer is over (curl finished it, or we aborted it) and the handle is back in the pool."""
        self._done = True
        self._handle = None
        self._slist = None
        if error is not None and self._error is None:
            self._error = error
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_deadline(self) -> None:
        self._error = ProviderTimeout(f"{self.url}: the total deadline passed", deadline_passed=True, url=self.url)
        self._abort()

    def _on_idle(self) -> None:
        self._error = ProviderTimeout(f"{self.url}: no data for {self._idle:g} s (the idle timeout)", url=self.url)
        self._abort()

    # -- public API ---------------------------------------------------------------------------------------

    @property
    def status(self) -> int:
        """The HTTP status code."""
        return self._status

    @property
    def headers(self) -> Mapping[str, str]:
        """Header fields with lower-case names; a repeated field keeps its last value."""
        if self._headers is None:
            headers: dict[str, str] = {}
            for line in self._lines:
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            self._headers = headers
        return self._headers

    @property
    def set_cookies(self) -> list[str]:
        """The raw ``Set-Cookie`` header values, in order."""
        values = []
        for line in self._lines:
            if line[:11].lower() == b"set-cookie:":
                values.append(line[11:].decode("latin-1").strip())
        return values

    def header(self, name: str) -> str | None:
        """One header field's value (the last if repeated), found without building ``headers``."""
        prefix = name.lower().encode("latin-1") + b":"
        size = len(prefix)
        for line in reversed(self._lines):
            if line[:size].lower() == prefix:
                return line[size:].decode("latin-1").strip()
        return None

    def _parse_head(self) -> None:
        """Split the status line and fields of the final header block off the raw lines curl delivered."""
        raw = self._raw
        start = 0
        if raw.count(b"\r\n") + raw.count(b"\n") > 1:
            # Several blocks: a later status line (after a 100 Continue, or a proxy's CONNECT answer) starts a
            # new one, and only the last counts.
            for start in range(len(raw) - 1, -1, -1):
                if raw[start][:5] == b"HTTP/":
                    break
        if not raw or raw[start][:5] != b"HTTP/":
            return
        parts = raw[start].split(None, 2)
        self._status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        end = len(raw)
        while end > start + 1 and raw[end - 1] in (b"\r\n", b"\n"):
            end -= 1
        self._lines = raw[start + 1 : end]

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
        self._parse_head()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """Yield the body as it arrives; chunks that arrived together are joined into one."""
        while data := await self.receive():
            yield data

    async def receive(self) -> bytes:
        """The body bytes that arrived since the last call (waiting for some), or ``b""`` at the end.

        ``aiter_bytes`` without the async generator: the streaming loop calls it once per network read.
        """
        chunks = self._chunks
        while True:
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                return data
            if self._done:
                if self._error is not None:
                    raise self._error
                return b""
            await self._wait()

    async def aread(self) -> bytes:
        """Read the whole body."""
        return b"".join([chunk async for chunk in self.aiter_bytes()])

    def _abort(self) -> None:
        """Stop the transfer now: take the handle away from curl, which drops its connection, and wake readers."""
        if self._done:
            return
        self._closing = True
        self._transport._finish(self, None)

    async def aclose(self) -> None:
        """Close the response, aborting an unfinished transfer at once; the pooled session stays usable."""
        self._abort()

    async def __aenter__(self) -> Response:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class _EarliestTimer:
    """One loop timer that calls ``callback`` at the earliest time it was asked for since it last fired.

    Asking for a later time than it is set for changes nothing, so a stream of requests (one per transfer, or
    one per curl timer) costs a loop timer only when it must fire sooner.
    """

    __slots__ = ("_at", "_callback", "_handle", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._at = 0.0

    def at_most(self, when: float) -> None:
        """Make sure the callback runs no later than ``when`` (loop time)."""
        if self._handle is None or self._at > when:
            if self._handle is not None:
                self._handle.cancel()
            self._at = when
            self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._callback()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class _CurlLoop:
    """The loop as curl_cffi's socket and timer callbacks see it: the real one, but with cheaper timers.

    curl asks for a timer on nearly every state change: "now" when a transfer is added, "in 1 s" for its own
    checks, and "none" (which curl_cffi turns into an immediate call) when the last transfer ends. Scheduling,
    cancelling and firing a loop timer for each of those was a tenth of a small request's client time. Here
    "none" schedules nothing, the "now" of a transfer the transport starts itself is skipped (``deferred``),
    and the rest share one ``_EarliestTimer``. A timer that fires before curl's time sets itself again, so
    curl is never called late.
    """

    __slots__ = (
        "_loop",
        "_multi",
        "_timer",
        "_want",
        "_writers",
        "add_reader",
        "create_future",
        "deferred",
        "remove_reader",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, multi: _Multi) -> None:
        self._loop = loop
        self._multi = multi
        self._want: float | None = None  # when curl wants ``process_data(TIMEOUT)``; None: never
        self._timer = _EarliestTimer(loop, self._fire)  # checks ``_want``
        #: True while the transport is about to call ``process_data`` itself: a "now" timer is then not needed.
        self.deferred = False
        self._writers: set[int] = set()  # curl_cffi removes a writer on every socket change; most never had one
        self.add_reader = loop.add_reader
        self.remove_reader = loop.remove_reader
        self.create_future = loop.create_future

    def add_writer(self, fd: int, callback: Any, *args: Any) -> None:
        self._writers.add(fd)
        self._loop.add_writer(fd, callback, *args)

    def remove_writer(self, fd: int) -> bool:
        if fd not in self._writers:
            return False
        self._writers.discard(fd)
        return self._loop.remove_writer(fd)

    def call_later(self, delay: float, callback: object, *args: object) -> _CurlLoop | None:
        """curl_cffi's ``timer_function``: call ``process_data(TIMEOUT)`` after ``delay`` (< 0: never)."""
        if delay < 0:
            return None
        self._want = self._loop.time() + delay
        if not self.deferred:
            self._arm()
        return self  # curl_cffi cancels it before asking again

    def cancel(self) -> None:
        self._want = None

    def settle(self) -> None:
        """End a ``deferred`` stretch: make sure a timer covers what curl last asked for."""
        self.deferred = False
        self._arm()

    def _arm(self) -> None:
        if self._want is not None:
            self._timer.at_most(self._want)

    def _fire(self) -> None:
        want = self._want
        if want is None:
            return
        if want > self._loop.time() + _TIMER_SLACK:
            self._arm()  # early: curl moved its time on since this was set
            return
        self._want = None
        self._multi.process_data(_CURL_SOCKET_TIMEOUT, 0)

    def close(self) -> None:
        self._want = None
        self._writers.clear()
        self._timer.cancel()


class _Multi(AsyncCurl):
    """curl_cffi's driver of the curl multi handle (its socket and timer callbacks), except that a finished
    transfer is handed to its ``Response`` at once rather than through a future and a loop iteration."""

    def __init__(self, loop: asyncio.AbstractEventLoop, transport: Transport) -> None:
        super().__init__(loop=loop)
        self._transport = transport
        self._int_out = ffi.new("int *")
        self.curl_loop = self.loop = _CurlLoop(self.loop, self)  # type: ignore[assignment]

    def socket_action(self, sockfd: int, ev_bitmask: int) -> int:
        """curl_cffi's safety net (``_force_timeout``, every 0.1 s) calls this. Its own version drives curl but
        never reads the finished transfers, so a transfer that ends inside it was never handed to its response
        and hung until the deadline; read them as every other action does."""
        self.process_data(sockfd, ev_bitmask)
        return 0

    def process_data(self, sockfd: int, ev_bitmask: int) -> None:
        multi = self._curlm
        if not multi:
            return
        self._check_error(lib.curl_multi_socket_action(multi, sockfd, ev_bitmask, self._int_out))
        while True:
            message = lib.curl_multi_info_read(multi, self._int_out)
            if message == ffi.NULL:
                return
            if message.msg == _CURLMSG_DONE:
                self._transport._on_done(message.easy_handle, message.data.result)


class Transport:
    """Sends requests over the curl multi handle of one event loop, with a pool of configured curl handles."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._multi = _Multi(loop, self)
        self._closed = False
        # Idle handles, most recently used last; a handle keeps the constant options of its last request.
        self._idle: list[_Handle] = []
        self._count = 0  # handles created
        self._waiters: deque[asyncio.Future[None]] = deque()  # requests waiting for a handle
        self._active: dict[Any, tuple[_Handle, Response]] = {}  # curl easy pointer -> its transfer
        # Encoded header lists by the headers they carry. A record's identity sends the same headers on
        # every call, so curl's list is built once per record, not per request.
        self._slists: dict[tuple[tuple[str, str], ...], Any] = {}
        # One loop timer enforces every transfer's total deadline and idle timeout: it is set for the earliest
        # time one could expire and moved only when a new transfer's comes earlier. A request costs no timer
        # of its own, a body chunk only a clock read, and as timeouts are minutes long the watchdog wakes rarely.
        self._watchdog = _EarliestTimer(loop, self._check_deadlines)

    async def handle_request(self, request: Request) -> Response:
        """Send ``request`` and return once the status and headers are known; the body streams after."""
        if self._closed:
            raise RuntimeError("the transport is closed")
        handle = await self._acquire((request.impersonate, request.proxy))
        response = Response(self, handle, request.url, self._loop)
        curl_loop = self._multi.curl_loop
        try:
            if handle.key != (request.impersonate, request.proxy):
                handle.configure(request)
            self._set_request_options(handle, request, response)
            self._active[handle.ptr] = (handle, response)
            # curl asks for a "now" timer when a transfer is added; we start the transfer ourselves below, at
            # once, instead of one loop iteration later.
            curl_loop.deferred = True
            code = lib.curl_multi_add_handle(self._multi._curlm, handle.ptr)
            if code != 0:
                raise CurlError(f"curl_multi_add_handle failed ({code})", code)
        except BaseException:
            curl_loop.settle()
            self._active.pop(handle.ptr, None)
            response._handle = None
            handle.key = None  # half configured: configure it afresh next time
            self._release(handle)
            raise
        response._idle = request.idle_timeout
        due = self._loop.time() + request.idle_timeout
        if request.deadline is not None:
            response._deadline = request.deadline
            due = min(due, request.deadline)
        self._watchdog.at_most(due)
        try:
            self._multi.process_data(_CURL_SOCKET_TIMEOUT, 0)
        finally:
            curl_loop.settle()
        try:
            await response._start()
        except BaseException:
            await response.aclose()
            raise
        return response

    async def _acquire(self, key: tuple[str | None, str | None]) -> _Handle:
        """An idle handle, preferring one configured for ``key``; waits only when every handle is busy."""
        while True:
            idle = self._idle
            if idle:
                if idle[-1].key == key:
                    return idle.pop()
                for i in range(len(idle) - 2, -1, -1):
                    if idle[i].key == key:
                        return idle.pop(i)
                return idle.pop()
            if self._count < _MAX_CLIENTS:
                self._count += 1
                return _Handle()
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, but leaving: pass the turn on
                elif waiter in self._waiters:
                    self._waiters.remove(waiter)
                raise

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _set_request_options(self, handle: _Handle, request: Request, response: Response) -> None:
        """Set what changes per request on a handle whose constant options are already set.

        Options go straight to ``curl_easy_setopt``: ``Curl.setopt`` builds a dict and walks a chain of branches
        per call, which was a tenth of a small request's client time.
        """
        ptr = handle.ptr
        _setopt(ptr, CurlOpt.URL, request.url.encode())  # libcurl copies string options
        method = request.method.upper()
        body = request.body
        if method == "POST" or body is not None:
            body = body or b""
            _setopt(ptr, CurlOpt.POSTFIELDSIZE, _long(len(body)))
            _setopt(ptr, CurlOpt.COPYPOSTFIELDS, body)  # copied: the bytes may go away before curl sends
        else:
            _setopt(ptr, CurlOpt.HTTPGET, _long(1))
        _setopt(ptr, CurlOpt.CUSTOMREQUEST, ffi.NULL if method in ("GET", "POST") else method.encode())
        response._slist = slist = self._header_list(request.headers)
        _setopt(ptr, CurlOpt.HTTPHEADER, slist)
        timeout = max(1, int(request.idle_timeout))
        _setopt(ptr, CurlOpt.CONNECTTIMEOUT_MS, _long(timeout * 1000))
        handle.body.callback = response._on_body
        handle.headers.callback = response._raw

    def _header_list(self, headers: Sequence[tuple[str, str]]) -> Any:
        """curl's list of header lines for ``headers`` (sent exactly, in order), built once and kept."""
        key = headers if type(headers) is tuple else tuple(headers)
        slist = self._slists.get(key)
        if slist is None:
            slist = ffi.NULL
            for name, value in key:
                slist = lib.curl_slist_append(slist, f"{name}: {value}".encode())
            # "Expect:" with no value stops curl from adding "Expect: 100-continue" to larger POST bodies.
            slist = ffi.gc(lib.curl_slist_append(slist, b"Expect:"), lib.curl_slist_free_all)
            if len(self._slists) >= _MAX_HEADER_LISTS:
                # The oldest goes; a response still sending it holds its own reference until it ends.
                del self._slists[next(iter(self._slists))]
            self._slists[key] = slist
        return slist

    def _check_deadlines(self) -> None:
        """Abort the transfers past their deadline or quiet for their idle timeout; wake again for the next."""
        now = self._loop.time()
        quiet_now = _monotonic()
        upcoming: float | None = None
        for _, response in list(self._active.values()):
            deadline = response._deadline
            if deadline is not None and deadline <= now + _TIMER_SLACK:
                response._on_deadline()
                continue
            if len(response._raw) != response._heard:  # header lines count as signs of life too
                response._heard = len(response._raw)
                response._last = max(response._last, quiet_now)
            quiet = quiet_now - response._last
            if quiet >= response._idle - _TIMER_SLACK:
                response._on_idle()
                continue
            due = now + response._idle - quiet
            if deadline is not None and deadline < due:
                due = deadline
            if upcoming is None or due < upcoming:
                upcoming = due
        if upcoming is not None:
            self._watchdog.at_most(upcoming)

    def _on_done(self, ptr: Any, code: int) -> None:
        """curl finished a transfer: with ``code`` 0, or with an error."""
        entry = self._active.get(ptr)
        if entry is None:
            return
        handle, response = entry
        error = handle.body.exception or handle.headers.exception
        if error is None and code != 0 and not response._closing:
            error = translate_curl_error(
                handle.curl._get_error(code, "perform"), url=response.url, in_body=response._started
            )
        self._finish(response, error)

    def _finish(self, response: Response, error: BaseException | None) -> None:
        """Take the response's handle back from curl (aborting an unfinished transfer) and end the response."""
        handle = response._handle
        if handle is not None:
            del self._active[handle.ptr]
            if self._multi._curlm:
                lib.curl_multi_remove_handle(self._multi._curlm, handle.ptr)
            handle.body.callback = handle.headers.callback = None
            handle.body.exception = handle.headers.exception = None
            self._release(handle)
        response._finish(error)

    def _release(self, handle: _Handle) -> None:
        """Put a handle back in the pool (or free it once the transport is closed)."""
        if self._closed:
            handle.curl.close()
            return
        self._idle.append(handle)
        if self._waiters:
            self._wake_one()

    async def aclose(self) -> None:
        """Close the transport: end the transfers still running, then free the handles and connections."""
        if self._closed:
            return
        for _, response in list(self._active.values()):
            self._finish(response, TransportError(f"{response.url}: the transport was closed", url=response.url))
        self._closed = True
        self._watchdog.cancel()
        for handle in self._idle:
            handle.curl.close()
        self._idle.clear()
        self._slists.clear()
        await self._multi.close()
        self._multi.curl_loop.close()


def _long(value: int) -> Any:
    """A ``long*`` for curl_cffi's setopt glue, which dereferences number options; small ones are shared."""
    pointer = _longs.get(value)
    if pointer is None:
        pointer = ffi.new("long*", value)
        if len(_longs) < 1024:
            _longs[value] = pointer
    return pointer


_longs: dict[int, Any] = {}
_setopt = lib._curl_easy_setopt
_CURL_SOCKET_TIMEOUT = -1
_monotonic = time.monotonic
#: A loop timer may fire this early (the loop's clock resolution); curl's own checks absorb it.
_TIMER_SLACK = 0.001
_CURLMSG_DONE = 1
#: Distinct header lists kept encoded (one per record and endpoint, in practice).
_MAX_HEADER_LISTS = 256


# One transport per event loop: curl's multi handle is bound to the loop that created it. Weak keys let a
# finished loop (each ``asyncio.run``) drop its transport with it.
_transports: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Transport] = weakref.WeakKeyDictionary()


def _dead_ref() -> None:
    return None


# Weak references to the last loop looked up and its transport.
_last: tuple[Callable[[], asyncio.AbstractEventLoop | None], Callable[[], Transport | None]] = (_dead_ref, _dead_ref)


def get_transport() -> Transport:
    """Return the running loop's transport, creating it on first use."""
    global _last
    loop = asyncio.get_running_loop()
    transport = _last[1]()
    if _last[0]() is loop and transport is not None and not transport._closed:
        return transport  # the common case, without a weak reference made per lookup
    transport = _transports.get(loop)
    if transport is None or transport._closed:
        transport = _transports[loop] = Transport(loop)
    _last = (weakref.ref(loop), weakref.ref(transport))
    return transport


async def close_transport() -> None:
    """Close the running loop's transport (tests and CLI commands call this before the loop ends)."""
    global _last
    transport = _transports.pop(asyncio.get_running_loop(), None)
    if transport is _last[1]():
        _last = (_dead_ref, _dead_ref)
    if transport is not None:
        await transport.aclose()
