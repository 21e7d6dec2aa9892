"""The playwright backend: ``connect_over_cdp`` to a browser we launched."""

from __future__ import annotations

import asyncio
import contextlib
import os
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


class PlaywrightDriver:
    """Drives Chromium through playwright, attached over CDP (playwright never launches it)."""

    name = "playwright"

    def __init__(self) -> None:
        self._manager: Any = None
        self._playwright: Any = None
        self._browser: Any = None

    async def prepare(self) -> None:
        # Starting playwright spawns its Node driver (0.4-0.6 s: Node, then 7 MB of JS), more than Chromium takes to
        # launch; the harvester runs this while Chromium launches, and keeps the driver across relaunches.
        if self._playwright is None:
            from playwright.async_api import async_playwright

            manager = async_playwright()
            with _node_compile_cache():
                self._playwright = await manager.start()
            self._manager = manager

    async def connect(self, process: BrowserProcess) -> None:
        reused = self._playwright is not None
        await self.prepare()
        try:
            self._browser = await self._playwright.chromium.connect_over_cdp(process.endpoint)
        except Exception:
            if not reused or not process.alive:
                raise
            # The browser is up, so the kept Node driver may be what failed (it died while the browser was
            # closed): connect once more through a new one.
            await self._stop_node()
            await self.prepare()
            self._browser = await self._playwright.chromium.connect_over_cdp(process.endpoint)

    async def disconnect(self) -> None:
        browser, self._browser = self._browser, None
        if browser is not None:
            with contextlib.suppress(Exception):
                # For a CDP-attached browser this only disconnects; the process is ours to stop.
                await browser.close()

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
        await self.disconnect()
        await self._stop_node()

    async def _stop_node(self) -> None:
        manager, self._manager = self._manager, None
        self._playwright = None
        if manager is not None:
            with contextlib.suppress(Exception):
                await manager.__aexit__(None, None, None)
            _read_driver_error(manager)


def _read_driver_error(manager: Any) -> None:
    """Read the error a Node driver that died left in its transport, which playwright itself never reads (asyncio
    would log "Future exception was never retrieved"). playwright's internals, read defensively: the only use of them."""
    transport = getattr(getattr(manager, "_client", None), "_transport", None)
    error = getattr(transport, "on_error_future", None)
    if isinstance(error, asyncio.Future) and error.done() and not error.cancelled():
        error.exception()


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
