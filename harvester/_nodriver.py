"""The nodriver backend: nodriver's CDP connection, attached to a browser we launched."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Generator
from typing import Any

from cache import Cookie

from ._browser import TAB_CLOSED, BrowserProcess
from ._driver import WAKE_EVENTS, cookie_from_cdp
from ._exceptions import BrowserError
from ._identity import Identity


def _cmd(method: str, **params: Any) -> Generator[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A raw CDP command in the generator form nodriver's ``Connection.send`` takes."""
    result = yield {"method": method, "params": params}
    return result


class NodriverPage:
    """One tab in its own browser context, driven over a flat CDP session on the browser's connection.

    A session on the connection we already have (rather than nodriver's ``Tab``, which opens a WebSocket
    per tab and asks for the target's info) saves a connection set-up per harvest.
    """

    def __init__(self, browser: Any, context_id: str, session_id: str, pages: dict[str, NodriverPage]) -> None:
        self._browser = browser
        self._context_id = context_id
        self._session_id = session_id
        # The driver's session -> page table, which routes events here until the page is closed.
        self._pages = pages
        pages[session_id] = self
        self._changed = asyncio.Event()
        self._closed = False
        self._detached = False

    async def _send(self, method: str, **params: Any) -> dict[str, Any]:
        if self._detached:
            raise BrowserError(TAB_CLOSED)
        try:
            result: dict[str, Any] = await self._browser.send(_cmd(method, **params), sessionId=self._session_id)
        except Exception as exc:
            if self._detached:
                raise BrowserError(TAB_CLOSED) from exc
            raise
        return result

    def _on_event(self, method: str) -> None:
        if method in WAKE_EVENTS:
            self._changed.set()

    def _on_detached(self) -> None:
        # Our session ended without our closing the page: the tab (or its window) was closed.
        self._detached = True
        self._changed.set()

    async def goto(self, url: str) -> None:
        result = await self._send("Page.navigate", url=url)
        # ERR_ABORTED only means another navigation took over (the challenge reloading itself); the
        # harvester's polling judges the page that ends up loaded.
        if isinstance(result, dict) and result.get("errorText") not in (None, "", "net::ERR_ABORTED"):
            raise BrowserError(f"navigation to {url} failed: {result['errorText']}", url=url)

    async def evaluate(self, expression: str) -> Any:
        result = await self._send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if result.get("exceptionDetails"):
            details = result["exceptionDetails"]
            text = (details.get("exception") or {}).get("description") or details.get("text")
            raise RuntimeError(f"page script failed: {text}")
        return (result.get("result") or {}).get("value")

    async def wait_for_change(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()
        self._changed.clear()

    async def cookies(self) -> list[Cookie]:
        result = await self._browser.send(_cmd("Storage.getCookies", browserContextId=self._context_id))
        return [cookie_from_cdp(c) for c in result.get("cookies", [])]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pages.pop(self._session_id, None)
        # Disposing the context closes its tab (and so the session) and drops its cookies.
        with contextlib.suppress(Exception):
            await self._browser.send(_cmd("Target.disposeBrowserContext", browserContextId=self._context_id))


class NodriverDriver:
    """Drives Chromium through nodriver's ``Browser`` connection, with one flat session per page."""

    name = "nodriver"

    def __init__(self) -> None:
        self._browser: Any = None
        self._pages: dict[str, NodriverPage] = {}

    async def prepare(self) -> None:
        # Importing nodriver (and its generated CDP modules) is its whole start-up cost, ~0.5 s: do it in a
        # thread so it overlaps Chromium's launch instead of blocking the event loop.
        await asyncio.to_thread(importlib.import_module, "nodriver")

    async def connect(self, process: BrowserProcess) -> None:
        import nodriver

        # Passing the profile and executable stops Config from making its own /tmp/uc_* profile and from
        # searching for a browser; `Browser.create(config)` with host/port would attach too, but it sleeps
        # 250 ms first (it expects to have just launched the browser), so attach the same way it does.
        config = nodriver.Config(
            user_data_dir=process.profile_dir,
            browser_executable_path=process.executable,
            headless=not process.headful,
        )
        browser = nodriver.Browser(config)
        browser.websocket_url = process.endpoint
        # Events of our pages' sessions go to their page (and skip nodriver's parsing, which nothing here
        # listens to); everything else to nodriver as before.
        forward = browser.process_event

        async def process_event(message: dict[str, Any], tx_id: int | None = None) -> None:
            page = self._pages.get(message.get("sessionId") or "")
            if page is not None:
                page._on_event(str(message.get("method", "")))
                return
            if message.get("method") == "Target.detachedFromTarget":
                detached = self._pages.get((message.get("params") or {}).get("sessionId") or "")
                if detached is not None:
                    detached._on_detached()
            await forward(message, tx_id)

        browser.process_event = process_event
        self._browser = browser
        await browser.attach()

    async def new_page(self, *, identity: Identity, proxy: str | None = None) -> NodriverPage:
        browser = self._browser
        if browser is None:
            raise RuntimeError("NodriverDriver.new_page() before connect()")
        params: dict[str, Any] = {"disposeOnDetach": True}
        if proxy:
            params["proxyServer"] = proxy
        context_id = (await browser.send(_cmd("Target.createBrowserContext", **params)))["browserContextId"]
        session_id = ""
        try:
            target_id = (
                await browser.send(_cmd("Target.createTarget", url="about:blank", browserContextId=context_id))
            )["targetId"]
            session_id = (await browser.send(_cmd("Target.attachToTarget", targetId=target_id, flatten=True)))[
                "sessionId"
            ]
            page = NodriverPage(browser, context_id, session_id, self._pages)
            # Set before the first navigation, so the very first request already carries the real identity.
            await page._send("Network.enable")
            await page._send("Network.setUserAgentOverride", **identity.cdp_override())
            # Lifecycle events let the harvester look at the page as soon as it changes instead of polling.
            await page._send("Page.enable")
        except BaseException:
            self._pages.pop(session_id, None)
            with contextlib.suppress(Exception):
                await browser.send(_cmd("Target.disposeBrowserContext", browserContextId=context_id))
            raise
        return page

    async def close(self) -> None:
        browser, self._browser = self._browser, None
        self._pages.clear()
        if browser is not None:
            with contextlib.suppress(Exception):
                await browser.aclose()


def create() -> NodriverDriver:
    """Factory used by ``_driver.make_driver``."""
    return NodriverDriver()
