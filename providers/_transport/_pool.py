"""``CurlTransport``, the default ``AsyncTransport``: a pool of configured curl handles on one multi handle.

A client owns one transport, and the transport keeps connections warm across calls. We drive curl's handles
ourselves (through the fence in ``_curl.py``) rather than through ``AsyncSession.request``, because a small
streamed request is dominated by per-request overhead there:

- a pooled handle keeps its constant options (TLS fingerprint, proxy, CA file, callbacks) from one request
  to the next, and only the URL, body, header list and timeouts are set per request;
- the encoded header list is built once per distinct set of headers (one per record, in practice);
- header lines are appended to a list by curl_cffi's buffer callback, with no Python frame per line;
- a finished transfer is handed to its response inside the same socket event, not through a future and a
  further loop iteration, and a new transfer starts at once instead of on curl's 0 ms timer.

We also send exactly the headers we choose (curl_cffi's default headers and its default User-Agent never
leak: we impersonate with ``default_headers=False``), and an early close aborts the transfer at once instead
of waiting for the server to finish.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from .._exceptions import ProviderTimeout, TransportError
from ._curl import ABORT, TIMER_SLACK, CurlHandle, CurlMulti, header_list
from ._errors import translate_curl_error
from ._protocol import Request
from ._timer import EarliestTimer

#: Enough handles that 50+ concurrent streams never queue for one; each is created lazily.
MAX_HANDLES = 128
#: Distinct header lists kept encoded (one per record and endpoint, in practice).
_MAX_HEADER_LISTS = 256
_monotonic = time.monotonic


class _HeaderLines(list[bytes]):
    """The raw header lines of one response. curl_cffi's ``buffer_callback`` calls ``write`` per line, and
    ``write`` is ``list.append`` itself, so a header line costs no Python frame."""

    __slots__ = ()
    write = list.append


class CurlResponse:
    """A response of ``CurlTransport`` whose body is read as it arrives. Always ``aclose()`` it.

    The transport talks to it only through ``on_body`` (curl's body callback), ``finish``, ``watch`` and
    ``started``; it talks to the transport only through ``CurlTransport.end``.
    """

    __slots__ = (
        "_chunks",
        "_closing",
        "_deadline",
        "_done",
        "_error",
        "_headers",
        "_heard",
        "_idle",
        "_last",
        "_lines",
        "_loop",
        "_status",
        "_transport",
        "_waiter",
        "handle",
        "raw",
        "slist",
        "started",
        "url",
    )

    def __init__(
        self,
        transport: CurlTransport,
        handle: CurlHandle,
        request: Request,
        slist: Any,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._transport = transport
        #: The curl handle, while curl owns the transfer.
        self.handle: CurlHandle | None = handle
        #: The encoded header list curl sends; it must outlive the transfer.
        self.slist = slist
        self._loop = loop
        self.url = request.url
        #: Raw header lines as curl delivers them.
        self.raw = _HeaderLines()
        self._status = 0
        self._lines: list[bytes] = []
        self._headers: dict[str, str] | None = None
        self._chunks: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self._deadline = request.deadline  # the loop time after which the watchdog aborts it
        self._idle = request.idle_timeout  # seconds of silence after which the watchdog aborts it
        self._last = _monotonic()  # when a body byte last arrived (or the request started)
        self._heard = 0  # header lines the watchdog saw at its last check
        #: The first body byte (or the end) has arrived, so the headers are final.
        self.started = False
        self._done = False
        self._closing = False
        self._error: BaseException | None = None

    # -- the transport's side (inside the event loop, from curl's socket handling) -------------------------------

    def on_body(self, chunk: bytes) -> int:
        """curl's body callback: keep the chunk and wake the reader."""
        if self._closing:
            return ABORT  # makes curl abort the transfer
        self.started = True
        self._last = _monotonic()
        self._chunks.append(chunk)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return len(chunk)

    def finish(self, error: BaseException | None) -> None:
        """The transfer is over (curl finished it, or it was aborted) and the handle is back in the pool."""
        self._done = True
        self.handle = None
        self.slist = None
        if error is not None and self._error is None and not self._closing:
            self._error = error
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def watch(self, now: float, quiet_now: float) -> float | None:
        """The watchdog's check: abort if past the deadline or quiet too long; else return when to look again."""
        deadline = self._deadline
        if deadline is not None and deadline <= now + TIMER_SLACK:
            self._abort(ProviderTimeout(f"{self.url}: the total deadline passed", deadline_passed=True, url=self.url))
            return None
        if len(self.raw) != self._heard:  # header lines count as signs of life too
            self._heard = len(self.raw)
            self._last = max(self._last, quiet_now)
        quiet = quiet_now - self._last
        if quiet >= self._idle - TIMER_SLACK:
            self._abort(ProviderTimeout(f"{self.url}: no data for {self._idle:g} s (the idle timeout)", url=self.url))
            return None
        due = now + self._idle - quiet
        return deadline if deadline is not None and deadline < due else due

    @property
    def due(self) -> float:
        """The loop time by which the watchdog must first look at this transfer."""
        due = self._loop.time() + self._idle
        return due if self._deadline is None else min(due, self._deadline)

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
        raw = self.raw
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

    async def wait_head(self) -> None:
        """Wait until the status and headers are final: the first body byte, or the end of the transfer."""
        while not self.started and not self._done:
            await self._wait()
        if not self.started and self._error is not None:
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

    def _abort(self, error: BaseException | None = None) -> None:
        """Stop the transfer now: hand the handle back (curl drops its connection) and wake readers."""
        if self._done:
            return
        if error is not None and self._error is None:
            self._error = error
        self._closing = True
        self._transport.end(self)

    async def aclose(self) -> None:
        """Close the response, aborting an unfinished transfer at once; the transport stays usable."""
        self._abort()

    async def __aenter__(self) -> CurlResponse:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class CurlTransport:
    """The default ``AsyncTransport``: curl_cffi with a browser's TLS fingerprint, bound to one event loop.

    Args:
        max_handles: transfers at once; more wait for a handle to come back.
    """

    def __init__(self, *, max_handles: int = MAX_HANDLES) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None  # bound on first use: curl's multi is per loop
        self._multi: CurlMulti | None = None
        self._max = max_handles
        self._closed = False
        # Idle handles, most recently used last; a handle keeps the constant options of its last request.
        self._idle: list[CurlHandle] = []
        self._count = 0  # handles created
        self._waiters: deque[asyncio.Future[None]] = deque()  # requests waiting for a handle
        self._active: dict[Any, tuple[CurlHandle, CurlResponse]] = {}  # curl easy pointer -> its transfer
        # Encoded header lists by the headers they carry. A record's identity sends the same headers on
        # every call, so curl's list is built once per record, not per request.
        self._slists: dict[tuple[tuple[str, str], ...], Any] = {}
        # One loop timer enforces every transfer's total deadline and idle timeout: it is set for the earliest
        # time one could expire and moved only when a new transfer's comes earlier. A request costs no timer
        # of its own, a body chunk only a clock read, and as timeouts are minutes long the watchdog wakes rarely.
        self._watchdog: EarliestTimer | None = None

    @property
    def handles(self) -> tuple[int, int]:
        """(handles created, handles idle): how much of the pool is in use."""
        return self._count, len(self._idle)

    def _bind(self) -> CurlMulti:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            self._multi = CurlMulti(loop, self._on_done)
            self._watchdog = EarliestTimer(loop, self._check_deadlines)
        elif loop is not self._loop:
            raise RuntimeError("this transport belongs to another event loop; make one per loop")
        assert self._multi is not None
        return self._multi

    async def handle_request(self, request: Request) -> CurlResponse:
        """Send ``request`` and return once the status and headers are known; the body streams after."""
        if self._closed:
            raise RuntimeError("the transport is closed")
        multi = self._multi if self._loop is not None else self._bind()
        assert multi is not None and self._loop is not None and self._watchdog is not None
        key = (request.impersonate, request.proxy)
        handle = await self._acquire(key)
        response = CurlResponse(self, handle, request, self._header_list(request.headers), self._loop)
        try:
            if handle.key != key:
                handle.configure(request.impersonate, request.proxy)
            handle.prepare(
                request.method,
                request.url,
                request.body,
                response.slist,
                request.idle_timeout,
                response.on_body,
                response.raw,
            )
            self._active[handle.ptr] = (handle, response)
            self._watchdog.at_most(response.due)
            multi.start(handle)
        except BaseException:
            if self._active.pop(handle.ptr, None) is not None:
                multi.remove(handle)
            response.handle = None
            handle.key = None  # half configured: configure it afresh next time
            handle.detach()
            self._release(handle)
            raise
        try:
            await response.wait_head()
        except BaseException:
            await response.aclose()
            raise
        return response

    async def _acquire(self, key: tuple[str | None, str | None]) -> CurlHandle:
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
            if self._count < self._max:
                self._count += 1
                return CurlHandle()
            assert self._loop is not None
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

    def _header_list(self, headers: Sequence[tuple[str, str]]) -> Any:
        """curl's list of header lines for ``headers`` (sent exactly, in order), built once and kept."""
        key = headers if type(headers) is tuple else tuple(headers)
        slist = self._slists.get(key)
        if slist is None:
            slist = header_list(key)
            if len(self._slists) >= _MAX_HEADER_LISTS:
                # The oldest goes; a response still sending it holds its own reference until it ends.
                del self._slists[next(iter(self._slists))]
            self._slists[key] = slist
        return slist

    def _check_deadlines(self) -> None:
        """Abort the transfers past their deadline or quiet for their idle timeout; wake again for the next."""
        assert self._loop is not None and self._watchdog is not None
        now = self._loop.time()
        quiet_now = _monotonic()
        upcoming: float | None = None
        for _, response in list(self._active.values()):
            due = response.watch(now, quiet_now)
            if due is not None and (upcoming is None or due < upcoming):
                upcoming = due
        if upcoming is not None:
            self._watchdog.at_most(upcoming)

    def _on_done(self, ptr: Any, code: int) -> None:
        """curl finished a transfer: with ``code`` 0, or with an error."""
        entry = self._active.get(ptr)
        if entry is None:
            return
        handle, response = entry
        error = handle.callback_error()
        if error is None and code != 0:
            error = translate_curl_error(handle.error(code), url=response.url, in_body=response.started)
        self.end(response, error)

    def end(self, response: CurlResponse, error: BaseException | None = None) -> None:
        """Take the response's handle back from curl (aborting an unfinished transfer) and end the response."""
        handle = response.handle
        if handle is not None:
            del self._active[handle.ptr]
            assert self._multi is not None
            self._multi.remove(handle)
            handle.detach()
            self._release(handle)
        response.finish(error)

    def _release(self, handle: CurlHandle) -> None:
        """Put a handle back in the pool (or free it once the transport is closed)."""
        if self._closed:
            handle.close()
            return
        self._idle.append(handle)
        if self._waiters:
            self._wake_one()

    async def aclose(self) -> None:
        """Close the transport: end the transfers still running, then free the handles and connections."""
        if self._closed:
            return
        for _, response in list(self._active.values()):
            self.end(response, TransportError(f"{response.url}: the transport was closed", url=response.url))
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        for handle in self._idle:
            handle.close()
        self._idle.clear()
        self._slists.clear()
        if self._multi is not None:
            await self._multi.close()

    @property
    def closed(self) -> bool:
        """True once ``aclose`` was called."""
        return self._closed
