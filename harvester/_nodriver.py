"""The nodriver backend: nodriver's CDP connection, attached to a browser we launched."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import Generator
from typing import Any

from cache import Cookie

from ._browser import BrowserProcess
from ._driver import cookie_from_cdp
from ._exceptions import BrowserError
from ._identity import Identity


def _cmd(method: str, **params: Any) -> Generator[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A raw CDP command in the generator form nodriver's ``Connection.send`` takes."""
    result = yield {"method": method, "params": params}
    return result


class NodriverPage:
    """A nodriver ``Tab`` in its own browser context."""

    def __init__(self, browser: Any, tab: Any, context_id: str) -> None:
        self._browser = browser
        self._tab = tab
        self._context_id = context_id
        self._closed = False

    async def goto(self, url: str) -> None:
        result = await self._tab.send(_cmd("Page.navigate", url=url))
        # ERR_ABORTED only means another navigation took over (the challenge reloading itself); the
        # harvester's polling judges the page that ends up loaded.
        if isinstance(result, dict) and result.get("errorText") not in (None, "", "net::ERR_ABORTED"):
            raise BrowserError(f"navigation to {url} failed: {result['errorText']}", url=url)

    async def evaluate(self, expression: str) -> Any:
        result = await self._tab.send(
            _cmd("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        )
        if result.get("exceptionDetails"):
            details = result["exceptionDetails"]
            text = (details.get("exception") or {}).get("description") or details.get("text")
            raise RuntimeError(f"page script failed: {text}")
        return (result.get("result") or {}).get("value")

    async def cookies(self) -> list[Cookie]:
        result = await self._browser.send(_cmd("Storage.getCookies", browserContextId=self._context_id))
        return [cookie_from_cdp(c) for c in result.get("cookies", [])]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Disposing the context closes its tab and drops its cookies; then close the tab's own WebSocket.
        with contextlib.suppress(Exception):
            await self._browser.send(_cmd("Target.disposeBrowserContext", browserContextId=self._context_id))
        with contextlib.suppress(Exception):
            await self._tab.aclose()


class NodriverDriver:
    """Drives Chromium through nodriver's connection classes (``Browser`` for the browser, ``Tab`` per page)."""

    name = "nodriver"

    def __init__(self) -> None:
        self._browser: Any = None

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
        self._browser = browser
        await browser.attach()

    async def new_page(self, *, identity: Identity, proxy: str | None = None) -> NodriverPage:
        import nodriver

        browser = self._browser
        if browser is None:
            raise RuntimeError("NodriverDriver.new_page() before connect()")
        params: dict[str, Any] = {"disposeOnDetach": True}
        if proxy:
            params["proxyServer"] = proxy
        context_id = (await browser.send(_cmd("Target.createBrowserContext", **params)))["browserContextId"]
        try:
            target_id = (
                await browser.send(_cmd("Target.createTarget", url="about:blank", browserContextId=context_id))
            )["targetId"]
            tab = nodriver.Tab(target=nodriver.cdp.target.TargetID(target_id), parent=browser)
            page = NodriverPage(browser, tab, context_id)
            # Set before the first navigation, so the very first request already carries the real identity.
            await tab.send(_cmd("Network.enable"))
            await tab.send(_cmd("Network.setUserAgentOverride", **identity.cdp_override()))
        except BaseException:
            with contextlib.suppress(Exception):
                await browser.send(_cmd("Target.disposeBrowserContext", browserContextId=context_id))
            raise
        return page

    async def close(self) -> None:
        browser, self._browser = self._browser, None
        if browser is not None:
            with contextlib.suppress(Exception):
                await browser.aclose()


def create() -> NodriverDriver:
    """Factory used by ``_driver.make_driver``."""
    return NodriverDriver()
