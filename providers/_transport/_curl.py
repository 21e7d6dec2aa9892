"""The fence around curl_cffi's private API: every use of its internals is in this module, and nowhere else.

We drive curl's multi and easy handles ourselves, rather than through ``AsyncSession.request``, because a small
streamed request is dominated by per-request overhead there (see ``_pool.py`` for what that buys). Doing so
needs curl_cffi internals: ``curl_cffi._wrapper`` (``ffi``, ``lib``), ``Curl._curl``, ``Curl._ensure_cacert``,
``Curl._get_error``, ``AsyncCurl._curlm``, ``AsyncCurl._check_error``, ``AsyncCurl.loop`` and an overridden
``AsyncCurl.socket_action``. They are private, so this module was written for, and pinned to, the curl_cffi
versions in ``SUPPORTED`` (pyproject pins the same range), and importing it on another version fails at once
with a message that says so, rather than misbehaving mid-stream.

What the rest of the transport sees: ``CurlHandle`` (a pooled easy handle), ``CurlMulti`` (the multi handle
bound to one event loop) and ``header_list`` (an encoded header list).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import curl_cffi

#: The curl_cffi versions (inclusive lower bound, exclusive upper bound) this module was written and tested for.
SUPPORTED = ((0, 17), (0, 18))


def _version(text: str) -> tuple[int, int]:
    parts = text.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return (0, 0)


if not SUPPORTED[0] <= _version(curl_cffi.__version__) < SUPPORTED[1]:
    raise ImportError(
        f"harvest's transport uses curl_cffi internals and supports curl_cffi "
        f">={'.'.join(map(str, SUPPORTED[0]))},<{'.'.join(map(str, SUPPORTED[1]))}; "
        f"found {curl_cffi.__version__}: reinstall harvest (pip install -e .) to get a supported version"
    )

from curl_cffi import Curl, CurlError, CurlOpt  # noqa: E402
from curl_cffi._wrapper import ffi, lib  # noqa: E402
from curl_cffi.aio import AsyncCurl  # noqa: E402
from curl_cffi.const import CurlHttpVersion  # noqa: E402
from curl_cffi.curl import CURL_WRITEFUNC_ERROR  # noqa: E402
from curl_cffi.requests.impersonate import resolve_latest_browser_type  # noqa: E402

from .._exceptions import ProviderError  # noqa: E402
from ._timer import EarliestTimer  # noqa: E402

#: What a body callback returns to make curl abort the transfer.
ABORT = CURL_WRITEFUNC_ERROR
_CURL_SOCKET_TIMEOUT = -1
_CURLMSG_DONE = 1
#: A loop timer may fire this early (the loop's clock resolution); curl's own checks absorb it.
TIMER_SLACK = 0.001
#: Seconds between the safety net's runs while transfers are running (curl_cffi's own period).
SAFETY_NET = 0.1


class _Sink:
    """The userdata behind a curl callback: curl_cffi's callbacks call ``callback`` and store ``exception``."""

    __slots__ = ("callback", "exception")

    def __init__(self) -> None:
        self.callback: Any = None
        self.exception: BaseException | None = None


class CurlHandle:
    """A pooled curl easy handle. Its constant options (fingerprint, proxy, CA file, callbacks) are set once per
    ``key`` and survive between requests: only the URL, body, headers and timeouts change per request."""

    __slots__ = ("_body", "_body_ref", "_curl", "_fresh", "_header_ref", "_headers", "key", "ptr")

    def __init__(self) -> None:
        self._curl = Curl()
        #: The C pointer: what ``CurlMulti``'s ``on_done`` names a finished transfer by.
        self.ptr = self._curl._curl
        self.key: tuple[str | None, str | None] | None = None  # None: (re)configure before the next request
        self._fresh = True  # no option set yet, so nothing to reset
        self._body = _Sink()  # its callback is the current response's body callback
        self._headers = _Sink()  # its callback is the current response's header line list
        # The C side holds only these pointers; keeping them here keeps the sinks alive.
        self._body_ref = ffi.new_handle(self._body)
        self._header_ref = ffi.new_handle(self._headers)

    def configure(self, impersonate: str | None, proxy: str | None) -> None:
        """Set the options that stay the same for every request with this key (fingerprint, proxy)."""
        curl, handle = self._curl, self.ptr
        if not self._fresh:
            curl.reset()  # also drops whatever a failed request left half set
        self._fresh = False
        self.key = None
        if impersonate:
            target = resolve_latest_browser_type(impersonate)
            # default_headers=False: the TLS and HTTP/2 fingerprint only; never curl_cffi's UA or headers.
            if curl.impersonate(target, default_headers=False) != 0:
                raise ProviderError(f"curl_cffi cannot impersonate {impersonate!r}; update curl_cffi or harvest again")
            _setopt(handle, CurlOpt.ACCEPT_ENCODING, b"gzip, deflate, br, zstd")
            # HTTP/2 over TLS only, as browsers do: never an "Upgrade: h2c" offer on a cleartext connection.
            _setopt(handle, CurlOpt.HTTP_VERSION, _long(CurlHttpVersion.V2TLS))
        if proxy:
            _setopt(handle, CurlOpt.PROXY, proxy.encode())
            # The proxy the record was harvested through is the one to use for every host: without this,
            # libcurl would still honour $no_proxy and send some hosts directly, from another IP.
            _setopt(handle, CurlOpt.NOPROXY, b"")
        curl._ensure_cacert()
        _setopt(handle, CurlOpt.WRITEFUNCTION, lib.write_callback)
        _setopt(handle, CurlOpt.WRITEDATA, self._body_ref)
        _setopt(handle, CurlOpt.HEADERFUNCTION, lib.buffer_callback)
        _setopt(handle, CurlOpt.HEADERDATA, self._header_ref)
        self.key = (impersonate, proxy)

    def prepare(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: Any,
        connect_timeout: float,
        on_body: Callable[[bytes], int],
        header_lines: Any,
    ) -> None:
        """Set what changes per request; ``headers`` is a ``header_list``, ``header_lines`` gets ``write(line)``.

        Options go straight to ``curl_easy_setopt``: ``Curl.setopt`` builds a dict and walks a chain of branches
        per call, which was a tenth of a small request's client time.
        """
        ptr = self.ptr
        _setopt(ptr, CurlOpt.URL, url.encode())  # libcurl copies string options
        method = method.upper()
        if method == "POST" or body is not None:
            body = body or b""
            _setopt(ptr, CurlOpt.POSTFIELDSIZE, _long(len(body)))
            _setopt(ptr, CurlOpt.COPYPOSTFIELDS, body)  # copied: the bytes may go away before curl sends
        else:
            _setopt(ptr, CurlOpt.HTTPGET, _long(1))
        _setopt(ptr, CurlOpt.CUSTOMREQUEST, ffi.NULL if method in ("GET", "POST") else method.encode())
        _setopt(ptr, CurlOpt.HTTPHEADER, headers)
        _setopt(ptr, CurlOpt.CONNECTTIMEOUT_MS, _long(max(1, int(connect_timeout)) * 1000))
        self._body.callback = on_body
        self._headers.callback = header_lines

    def callback_error(self) -> BaseException | None:
        """An exception a callback raised during the transfer (curl_cffi stores it instead of raising)."""
        return self._body.exception or self._headers.exception

    def error(self, code: int) -> CurlError:
        """curl_cffi's error for a failed transfer's code, with curl's own message."""
        error: CurlError = self._curl._get_error(code, "perform")
        return error

    def detach(self) -> None:
        """Forget the finished transfer's callbacks and errors."""
        self._body.callback = self._headers.callback = None
        self._body.exception = self._headers.exception = None

    def close(self) -> None:
        self._curl.close()


class CurlMulti:
    """The curl multi handle of one event loop: starts transfers, drives them from the loop's selector and calls
    ``on_done(ptr, code)`` when one finishes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_done: Callable[[Any, int], None]) -> None:
        self._multi = _Multi(loop, on_done)

    def start(self, handle: CurlHandle) -> None:
        """Add a prepared handle and start its transfer now (not on curl's 0 ms timer, one iteration later)."""
        multi = self._multi
        curl_loop = multi.curl_loop
        # curl asks for a "now" timer when a transfer is added; we start the transfer ourselves below, at
        # once, instead of one loop iteration later.
        curl_loop.deferred = True
        try:
            code = lib.curl_multi_add_handle(multi._curlm, handle.ptr)
            if code != 0:
                raise CurlError(f"curl_multi_add_handle failed ({code})", code)
            multi.process_data(_CURL_SOCKET_TIMEOUT, 0)
        finally:
            curl_loop.settle()

    def remove(self, handle: CurlHandle) -> None:
        """Take a handle back from curl, aborting its transfer if it is still running."""
        if self._multi._curlm:
            lib.curl_multi_remove_handle(self._multi._curlm, handle.ptr)

    def safety_net(self) -> None:
        """Run the periodic safety-net action now (tests use it to check transfers finished there)."""
        self._multi.socket_action(_CURL_SOCKET_TIMEOUT, 0)

    @property
    def safety_net_armed(self) -> bool:
        """True while the periodic safety net is due to run (only while transfers are running)."""
        return self._multi._net is not None

    async def close(self) -> None:
        self._multi.stop_safety_net()
        await self._multi.close()
        self._multi.curl_loop.close()


class _CurlLoop:
    """The loop as curl_cffi's socket and timer callbacks see it: the real one, but with cheaper timers.

    curl asks for a timer on nearly every state change: "now" when a transfer is added, "in 1 s" for its own
    checks, and "none" (which curl_cffi turns into an immediate call) when the last transfer ends. Scheduling,
    cancelling and firing a loop timer for each of those was a tenth of a small request's client time. Here
    "none" schedules nothing, the "now" of a transfer we start ourselves is skipped (``deferred``), and the rest
    share one ``EarliestTimer``. A timer that fires before curl's time sets itself again, so curl is never
    called late.
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
        self._timer = EarliestTimer(loop, self._fire)  # checks ``_want``
        #: True while a transfer is being started and ``process_data`` is about to run: no "now" timer needed.
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
        if want > self._loop.time() + TIMER_SLACK:
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
    transfer is reported through ``on_done`` at once rather than through a future and a loop iteration, and
    that its safety net runs only while a transfer does.

    curl_cffi drives curl once every 0.1 s (``_force_timeout``), in case curl missed a timer, for the multi
    handle's whole life: an idle server or client woke its loop ten times a second, forever, to find nothing
    to do (about 3 ms of CPU a second). Here the same action runs every ``SAFETY_NET`` seconds only while curl
    reports transfers running, and stops with the last one.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, on_done: Callable[[Any, int], None]) -> None:
        super().__init__(loop=loop)
        # curl_cffi's own safety net, a task started with the multi handle: it has not run yet.
        self._timeout_checker.cancel()
        self._on_done = on_done
        self._int_out = ffi.new("int *")
        self._net: asyncio.TimerHandle | None = None  # the safety net's next run, while transfers are running
        self._call_later = loop.call_later
        self.curl_loop = self.loop = _CurlLoop(self.loop, self)  # type: ignore[assignment]

    def socket_action(self, sockfd: int, ev_bitmask: int) -> int:
        """curl_cffi's version drives curl but never reads the finished transfers, so a transfer that ended
        inside it was never handed to its response and hung until the deadline; read them as every other
        action does."""
        self.process_data(sockfd, ev_bitmask)
        return 0

    def stop_safety_net(self) -> None:
        if self._net is not None:
            self._net.cancel()
            self._net = None

    def _safety_net(self) -> None:
        self._net = None
        self.process_data(_CURL_SOCKET_TIMEOUT, 0)

    def process_data(self, sockfd: int, ev_bitmask: int) -> None:
        multi = self._curlm
        if not multi:
            return
        self._check_error(lib.curl_multi_socket_action(multi, sockfd, ev_bitmask, self._int_out))
        if self._int_out[0] and self._net is None:  # transfers running: the safety net covers them
            self._net = self._call_later(SAFETY_NET, self._safety_net)
        while True:
            message = lib.curl_multi_info_read(multi, self._int_out)
            if message == ffi.NULL:
                return
            if message.msg == _CURLMSG_DONE:
                self._on_done(message.easy_handle, message.data.result)


def header_list(headers: Sequence[tuple[str, str]]) -> Any:
    """curl's encoded list of header lines, sent exactly and in order; freed when the last reference goes."""
    slist = ffi.NULL
    for name, value in headers:
        slist = lib.curl_slist_append(slist, f"{name}: {value}".encode())
    # "Expect:" with no value stops curl from adding "Expect: 100-continue" to larger POST bodies.
    return ffi.gc(lib.curl_slist_append(slist, b"Expect:"), lib.curl_slist_free_all)


def _long(value: int) -> Any:
    """A ``long*`` for curl_cffi's setopt glue, which dereferences number options; small ones are shared."""
    pointer = _longs.get(value)
    if pointer is None:
        pointer = ffi.new("long*", value)
        if len(_longs) < 1024:
            _longs[value] = pointer
    return pointer


# Read-only after the first few requests: the same few numbers (lengths, timeouts) recur.
_longs: dict[int, Any] = {}
_setopt = lib._curl_easy_setopt
