"""The playwright backend: ``connect_over_cdp`` to a browser we launched."""

from __future__ import annotations

import asyncio
import contextlib
import os
import weakref
from collections.abc import Iterator
from typing import Any

from cache import Cookie

from ._browser import TAB_CLOSED, BrowserProcess
from ._driver import PageSignals, cookie_from_cdp
from ._exceptions import BrowserError
from ._identity import Identity
from ._net import unreachable
from ._proxy import LOOPBACK_BYPASS, ProxySettings, is_proxy_refusal, parse_proxy


class PlaywrightPage(PageSignals):
    """A playwright page in its own ``BrowserContext``."""

    def __init__(self, context: Any, page: Any, proxy: ProxySettings | None = None) -> None:
        super().__init__(proxy)
        self._context = context
        self._page = page
        self._closed = False
        for event in ("framenavigated", "domcontentloaded", "load"):
            page.on(event, self._on_change)
        if proxy is not None:
            # playwright answers the proxy's challenge once per request and then cancels: wrong credentials
            # end as the proxy's own 407 answer shown as the response (an http:// URL), or as a failed request
            # (no credentials at all, or a tunnel to an https:// URL), never as a loop.
            page.on("response", self._on_response)
            page.on("requestfailed", self._on_request_failed)

    def _on_response(self, response: Any) -> None:
        if response.status == 407:  # only a proxy answers 407, and only when it gave up on our credentials
            self._refuse()

    def _on_request_failed(self, request: Any) -> None:
        if is_proxy_refusal(request.failure):
            self._refuse()

    async def goto(self, url: str) -> None:
        # "commit": return once the response starts; the harvester polls the page itself from there.
        with self._tab_closed():
            try:
                await self._page.goto(url, wait_until="commit")
            except Exception as exc:
                # The site down (refused, DNS, TLS, an unsafe port) is not the browser's fault. Another
                # navigation taking over (the challenge reloading itself) is no failure at all.
                if "ERR_ABORTED" in str(exc) or "interrupted by another navigation" in str(exc):
                    return
                error = unreachable(url, exc)
                if error is None:
                    raise
                raise error from None

    async def evaluate(self, expression: str) -> Any:
        with self._tab_closed():
            return await self._page.evaluate(expression)

    @contextlib.contextmanager
    def _tab_closed(self) -> Iterator[None]:
        """Say so when the call failed because the tab is gone (the person closed the window, --headful), or
        because the proxy refused us."""
        if self._refused is not None:
            raise self._refused
        try:
            yield
        except Exception as exc:
            if self._proxy is not None and is_proxy_refusal(str(exc)):
                self._refuse()
            if self._refused is not None:
                raise self._refused from exc
            if not self._closed and self._page.is_closed() and self._context.browser.is_connected():
                raise BrowserError(TAB_CLOSED) from exc
            raise

    async def cookies(self) -> list[Cookie]:
        return [cookie_from_cdp(dict(c)) for c in await self._context.cookies()]

    def is_open(self) -> bool:
        return not (self._closed or self._page.is_closed())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await self._context.close()


#: Seconds the Node driver stays up after its last user let go, for the next harvest of this process to reuse.
DRIVER_IDLE_STOP = 10.0


class _NodeDriver:
    """playwright's Node driver, shared by every ``PlaywrightDriver`` of one event loop.

    Starting it costs ~0.4-0.6 s (Node itself, then 7 MB of JS), more than launching Chromium, and it is not tied to
    any browser: each harvester attaches to its own Chromium through it. So the harvests of one process (the Python
    API's ``harvest()`` called again and again, a browser relaunched after it died or idled) start it once. It stops
    ``DRIVER_IDLE_STOP`` seconds after its last user let go, or when the loop's remaining tasks are cancelled
    (``asyncio.run`` ending): never left running past its loop.
    """

    def __init__(self) -> None:
        self.users = 0
        self._starting: asyncio.Task[Any] | None = None
        self._manager: Any = None
        self._idle: asyncio.Task[None] | None = None

    async def acquire(self) -> Any:
        """The running playwright (started on first use); pair with :meth:`release`."""
        self.users += 1
        if self._idle is not None:
            idle, self._idle = self._idle, None
            idle.cancel()  # it sees _idle changed, and leaves the driver running
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())
        try:
            # Shielded: one caller cancelled must not cancel a start that others wait on.
            return await asyncio.shield(self._starting)
        except BaseException:
            if self._starting.done() and (self._starting.cancelled() or self._starting.exception() is not None):
                self._starting = None  # a failed start is tried again by the next caller
            self.release()
            raise

    def release(self) -> None:
        """Let go of the driver; the last user's release starts its idle countdown."""
        self.users -= 1
        if self.users == 0 and self._starting is not None and self._idle is None:
            self._idle = asyncio.ensure_future(self._stop_when_idle())

    def discard(self) -> None:
        """Forget a driver that failed (its Node process died): the next acquire starts another."""
        starting, self._starting = self._starting, None
        if starting is not None:
            task = asyncio.ensure_future(self._stop(starting, self._manager))
            _STOPPING.add(task)
            task.add_done_callback(_STOPPING.discard)

    async def _start(self) -> Any:
        from playwright.async_api import async_playwright

        manager = async_playwright()
        with _node_compile_cache():
            playwright = await manager.start()
        self._manager = manager
        return playwright

    async def _stop_when_idle(self) -> None:
        me = asyncio.current_task()
        try:
            await asyncio.sleep(DRIVER_IDLE_STOP)
        except asyncio.CancelledError:
            if self._idle is not me:
                return  # cancelled by acquire(): a new user has it
            # Cancelled by the loop's end (asyncio.run cancels what is left): stop it now, then go.
            await self._stop_current()
            raise
        await self._stop_current()

    async def _stop_current(self) -> None:
        starting, self._starting = self._starting, None
        self._idle = None
        if starting is not None:
            await self._stop(starting, self._manager)

    @staticmethod
    async def _stop(starting: asyncio.Task[Any], manager: Any) -> None:
        with contextlib.suppress(BaseException):
            await starting  # (a start still running is waited for, so that its process is stopped too)
        if manager is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await manager.__aexit__(None, None, None)
            # playwright's own attributes, hence getattr: a newer playwright without them only loses these two.
            transport = getattr(getattr(manager, "_client", None), "_transport", None)
            # Reap the Node process here: playwright waits for it in its reader task, which the end of the loop
            # (asyncio.run cancels every task at once) may have cancelled first.
            proc = getattr(transport, "_proc", None)
            if isinstance(proc, asyncio.subprocess.Process) and proc.returncode is None:
                try:
                    async with asyncio.timeout(5.0):
                        await proc.wait()  # it exits once its stdin is closed (stop() did)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    await proc.wait()
            # A driver that died set its transport's error future, which playwright never reads: read it, or
            # asyncio logs "exception was never retrieved".
            error = getattr(transport, "on_error_future", None)
            if isinstance(error, asyncio.Future) and error.done() and not error.cancelled():
                error.exception()


_DRIVERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _NodeDriver] = weakref.WeakKeyDictionary()
_STOPPING: set[asyncio.Task[None]] = set()  # strong references to discarded drivers being stopped


def _node_driver() -> _NodeDriver:
    loop = asyncio.get_running_loop()
    driver = _DRIVERS.get(loop)
    if driver is None:
        driver = _DRIVERS[loop] = _NodeDriver()
    return driver


class PlaywrightDriver:
    """Drives Chromium through playwright, attached over CDP (playwright never launches it)."""

    name = "playwright"

    def __init__(self) -> None:
        self._node: _NodeDriver | None = None
        self._playwright: Any = None
        self._browser: Any = None

    async def prepare(self) -> None:
        # Starting playwright spawns its Node driver (~0.4 s, mostly parsing 7 MB of JS), once per event loop
        # (_NodeDriver); the harvester runs this while Chromium launches.
        if self._playwright is None:
            node = _node_driver()
            self._playwright = await node.acquire()
            self._node = node

    async def connect(self, process: BrowserProcess) -> None:
        await self.prepare()
        try:
            self._browser = await self._playwright.chromium.connect_over_cdp(process.endpoint)
        except Exception:
            if not process.alive or self._node is None:
                raise
            # The browser is up, so the shared driver may be what failed (its Node process died while idle):
            # connect once more through a driver started afresh.
            node, self._node, self._playwright = self._node, None, None
            node.discard()
            node.release()
            await self.prepare()
            self._browser = await self._playwright.chromium.connect_over_cdp(process.endpoint)

    async def new_page(self, *, identity: Identity, proxy: str | None = None) -> PlaywrightPage:
        if self._browser is None:
            raise RuntimeError("PlaywrightDriver.new_page() before connect()")
        options: dict[str, Any] = {"locale": "en-US"}
        settings = parse_proxy(proxy) if proxy else None
        if settings is not None:
            # Chromium refuses credentials in the server URL; playwright answers the proxy's 407 with these
            # (over Fetch, like our nodriver page). The bypass list is explicit rather than left to playwright's
            # own default, which a PLAYWRIGHT_* variable can turn off (see _proxy.LOOPBACK_BYPASS).
            options["proxy"] = {"server": settings.server, "bypass": LOOPBACK_BYPASS}
            if settings.has_credentials:
                options["proxy"].update(username=settings.username, password=settings.password)
        context = await self._browser.new_context(**options)
        try:
            page = await context.new_page()
            wrapped = PlaywrightPage(context, page, settings)
            # playwright's own user_agent option cannot set userAgentMetadata, so client hints would not
            # match; set the full override over this page's CDP session before the first navigation.
            session = await context.new_cdp_session(page)
            # playwright's own response event leaves out Set-Cookie; the raw headers come over CDP.
            session.on("Network.responseReceivedExtraInfo", wrapped._on_response_extra_info)
            # The main document's status and headers (playwright's response.all_headers() is a round trip).
            session.on("Network.responseReceived", wrapped._on_response_received)
            # One round trip, not three: the session answers its commands in order.
            info, *_ = await asyncio.gather(
                session.send("Target.getTargetInfo"),
                session.send("Network.enable"),
                session.send("Network.setUserAgentOverride", identity.cdp_override()),
            )
            wrapped.main_frame = info["targetInfo"]["targetId"]  # a tab's main frame has its target's id
        except BaseException:
            with contextlib.suppress(Exception):
                await context.close()
            raise
        return wrapped

    async def close(self) -> None:
        browser, self._browser = self._browser, None
        node, self._node = self._node, None
        self._playwright = None
        if browser is not None:
            with contextlib.suppress(Exception):
                # For a CDP-attached browser this only disconnects; the process is ours to stop.
                await browser.close()
        if node is not None:
            node.release()


@contextlib.contextmanager
def _node_compile_cache() -> Iterator[None]:
    """Let the Node driver reuse its compiled JS between runs (Node >= 22 reads ``$NODE_COMPILE_CACHE``).

    playwright gives the driver a copy of ``os.environ`` and has no option for it, so the variable is set
    only while the driver starts, and only if the user has not set it. The cache is keyed by Node's version
    and each file's contents, so a playwright upgrade only misses it once.
    """
    if os.environ.get(_COMPILE_CACHE_VAR) is not None:
        yield
        return
    import platformdirs

    os.environ[_COMPILE_CACHE_VAR] = os.path.join(platformdirs.user_cache_dir("harvest"), "node-compile-cache")
    try:
        yield
    finally:
        os.environ.pop(_COMPILE_CACHE_VAR, None)


_COMPILE_CACHE_VAR = "NODE_COMPILE_CACHE"


def create() -> PlaywrightDriver:
    """Factory used by ``_driver.make_driver``."""
    return PlaywrightDriver()
