"""The nodriver backend: nodriver's CDP connection, attached to a browser we launched."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Generator, Sequence
from types import ModuleType
from typing import Any

from cache import Cookie

from ._browser import TAB_CLOSED, BrowserProcess
from ._driver import WAKE_EVENTS, PageScriptError, PageSignals, cookie_from_cdp
from ._exceptions import BrowserError
from ._identity import Identity
from ._net import unreachable
from ._proxy import LOOPBACK_BYPASS, ProxySettings, is_proxy_refusal, parse_proxy


def _cmd(method: str, **params: Any) -> Generator[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A raw CDP command in the generator form nodriver's ``Connection.send`` takes."""
    result = yield {"method": method, "params": params}
    return result


class NodriverPage(PageSignals):
    """One tab in its own browser context, driven over a flat CDP session on the browser's connection.

    A session on the connection we already have (rather than nodriver's ``Tab``, which opens a WebSocket
    per tab and asks for the target's info) saves a connection set-up per harvest.
    """

    def __init__(
        self,
        browser: Any,
        context_id: str,
        session_id: str,
        pages: dict[str, NodriverPage],
        proxy: ProxySettings | None = None,
    ) -> None:
        super().__init__(proxy)
        self._browser = browser
        self._context_id = context_id
        self._session_id = session_id
        # The driver's session -> page table, which routes events here until the page is closed.
        self._pages = pages
        pages[session_id] = self
        self._closed = False
        self._detached = False
        # Resolved when our session ends without our closing the page (the tab was closed).
        self._gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Requests whose proxy challenge we answered: a second challenge means the credentials were wrong.
        self._challenged: set[str] = set()
        # Strong references to the answers sent from event handlers, so none is collected mid-flight.
        self._replies: set[asyncio.Task[None]] = set()

    async def _send(self, method: str, **params: Any) -> dict[str, Any]:
        if self._refused is not None:
            raise self._refused
        if self._detached:
            raise BrowserError(TAB_CLOSED)
        sending = asyncio.ensure_future(self._browser.send(_cmd(method, **params), sessionId=self._session_id))
        try:
            # A command in flight when the tab closes may never be answered: stop waiting once it is gone.
            await asyncio.wait((sending, self._gone), return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            sending.cancel()
            raise
        if not sending.done():
            sending.cancel()
            raise BrowserError(TAB_CLOSED)
        try:
            result: dict[str, Any] = sending.result()
        except Exception as exc:
            if self._detached:
                raise BrowserError(TAB_CLOSED) from exc
            raise
        return result

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method in WAKE_EVENTS:
            self._changed.set()
        elif method == "Network.responseReceivedExtraInfo":
            self._on_response_extra_info(params)
        elif method == "Network.responseReceived":
            self._on_response_received(params)
            if self._proxy is not None and _refused_by_proxy(method, params):
                self._refuse()
        elif method == "Fetch.requestPaused":
            # Fetch is on only to answer the proxy's challenge, and it pauses every request: let each go on.
            self._reply("Fetch.continueRequest", requestId=params.get("requestId"))
        elif method == "Fetch.authRequired":
            self._on_auth_required(params)
        elif self._proxy is not None and _refused_by_proxy(method, params):
            self._refuse()

    def _on_auth_required(self, params: dict[str, Any]) -> None:
        request_id = str(params.get("requestId") or "")
        proxy = self._proxy
        if (params.get("authChallenge") or {}).get("source") != "Proxy" or proxy is None:
            # A site's own HTTP auth: what Chromium does without us (a dialog with --headful, else cancel).
            answer: dict[str, Any] = {"response": "Default"}
        elif request_id in self._challenged:
            # Challenged again after our answer: the proxy refused the credentials. Answering again would
            # only loop, so cancel (the request then fails) and end the harvest with a clear error.
            answer = {"response": "CancelAuth"}
            self._refuse()
        else:
            self._challenged.add(request_id)
            answer = {"response": "ProvideCredentials", "username": proxy.username, "password": proxy.password}
        self._reply("Fetch.continueWithAuth", requestId=request_id, authChallengeResponse=answer)

    def _reply(self, method: str, **params: Any) -> None:
        """Send a command from an event handler without waiting: the handler runs inside nodriver's reader
        loop, which must keep reading to receive the answer."""

        async def send() -> None:
            # The request may be gone by now (the page navigated away or closed): nothing to answer then.
            with contextlib.suppress(Exception):
                await self._browser.send(_cmd(method, **params), sessionId=self._session_id)

        task = asyncio.ensure_future(send())
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)

    def _on_detached(self) -> None:
        # Our session ended without our closing the page: the tab (or its window) was closed.
        self._detached = True
        if not self._gone.done():
            self._gone.set_result(None)
        self._changed.set()

    async def goto(self, url: str) -> None:
        result = await self._send("Page.navigate", url=url)
        # ERR_ABORTED only means another navigation took over (the challenge reloading itself); the
        # harvester's polling judges the page that ends up loaded.
        if isinstance(result, dict) and result.get("errorText") not in (None, "", "net::ERR_ABORTED"):
            if self._proxy is not None and is_proxy_refusal(result["errorText"]):
                self._refuse()
            if self._refused is not None:
                # Whatever the navigation's own error says (a tunnel's 407 is ERR_HTTP_RESPONSE_CODE_FAILURE),
                # the proxy turning us away is the cause.
                raise self._refused
            # The site down (refused, DNS, TLS, an unsafe port) is not the browser's fault.
            raise unreachable(url, result["errorText"]) or BrowserError(
                f"navigation to {url} failed: {result['errorText']}", url=url
            )

    async def evaluate(self, expression: str) -> Any:
        result = await self._send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if result.get("exceptionDetails"):
            details = result["exceptionDetails"]
            text = (details.get("exception") or {}).get("description") or details.get("text")
            raise PageScriptError(f"page script failed: {text}")
        return (result.get("result") or {}).get("value")

    async def cookies(self) -> list[Cookie]:
        result = await self._browser.send(_cmd("Storage.getCookies", browserContextId=self._context_id))
        return [cookie_from_cdp(c) for c in result.get("cookies", [])]

    def is_open(self) -> bool:
        return not (self._closed or self._detached)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pages.pop(self._session_id, None)
        for task in self._replies:
            task.cancel()
        # Disposing the context closes its tab (and so the session) and drops its cookies.
        with contextlib.suppress(Exception):
            await self._browser.send(_cmd("Target.disposeBrowserContext", browserContextId=self._context_id))


def _refused_by_proxy(method: str, params: dict[str, Any]) -> bool:
    """A request failed for want of proxy credentials, or the browser gave up and shows the proxy's 407."""
    if method == "Network.loadingFailed":
        return is_proxy_refusal(params.get("errorText"))
    if method == "Network.responseReceived":
        return (params.get("response") or {}).get("status") == 407  # only a proxy answers 407
    return False


class NodriverDriver:
    """Drives Chromium through nodriver's ``Browser`` connection, with one flat session per page."""

    name = "nodriver"

    def __init__(self) -> None:
        self._browser: Any = None
        self._pages: dict[str, NodriverPage] = {}

    async def prepare(self) -> None:
        # Importing nodriver is its whole start-up cost: do it in a thread so it overlaps Chromium's launch
        # instead of blocking the event loop (and lazily, see import_nodriver).
        await asyncio.to_thread(import_nodriver)

    async def connect(self, process: BrowserProcess) -> None:
        nodriver = import_nodriver()

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
            method = str(message.get("method", ""))
            if page is not None:
                page._on_event(method, message.get("params") or {})
                return
            if method == "Target.detachedFromTarget":
                detached = self._pages.get((message.get("params") or {}).get("sessionId") or "")
                if detached is not None:
                    detached._on_detached()
            if method.startswith("Target."):
                # nodriver only listens to the browser's Target events; any other event's module may not be
                # loaded (import_nodriver), and nodriver would log a KeyError for it.
                await forward(message, tx_id)

        browser.process_event = process_event
        self._browser = browser
        await browser.attach()

    async def new_page(self, *, identity: Identity, proxy: str | None = None) -> NodriverPage:
        browser = self._browser
        if browser is None:
            raise RuntimeError("NodriverDriver.new_page() before connect()")
        settings = parse_proxy(proxy) if proxy else None
        params: dict[str, Any] = {"disposeOnDetach": True}
        if settings is not None:
            # The bare address: Chromium refuses a URL with credentials (they are answered below, over Fetch).
            params["proxyServer"] = settings.server
            params["proxyBypassList"] = LOOPBACK_BYPASS
        context_id = (await browser.send(_cmd("Target.createBrowserContext", **params)))["browserContextId"]
        session_id = ""
        try:
            target_id = (
                await browser.send(_cmd("Target.createTarget", url="about:blank", browserContextId=context_id))
            )["targetId"]
            session_id = (await browser.send(_cmd("Target.attachToTarget", targetId=target_id, flatten=True)))[
                "sessionId"
            ]
            page = NodriverPage(browser, context_id, session_id, self._pages, settings)
            page.main_frame = target_id  # a tab's main frame has its target's id
            # Set before the first navigation, so the very first request already carries the real identity.
            # The first command to a new tab waits for its renderer to start; the others need not wait for
            # one another, so they go out together (a round trip, not four).
            setup = [
                page._send("Network.enable"),
                page._send("Network.setUserAgentOverride", **identity.cdp_override()),
                # Lifecycle events let the harvester look at the page as soon as it changes instead of polling.
                page._send("Page.enable"),
            ]
            if settings is not None and settings.has_credentials:
                # Answer the proxy's 407 with the URL's credentials (Fetch.authRequired). Only with credentials:
                # Fetch pauses every request of the page until we let it go on, a round trip each. Once one
                # request has authenticated, Chromium sends the credentials unasked for the rest of the context
                # (its proxy auth cache is per browser context), so frames in other processes (cross-site
                # iframes: other targets, not seen here) are covered too.
                setup.append(
                    page._send(
                        "Fetch.enable",
                        handleAuthRequests=True,
                        patterns=[{"urlPattern": "*", "requestStage": "Request"}],
                    )
                )
            await asyncio.gather(*setup)
        except BaseException:
            self._pages.pop(session_id, None)
            with contextlib.suppress(Exception):
                await browser.send(_cmd("Target.disposeBrowserContext", browserContextId=context_id))
            raise
        return page

    async def disconnect(self) -> None:
        # nodriver's connection is the browser's: nothing of it outlives the browser.
        await self.close()

    async def close(self) -> None:
        browser, self._browser = self._browser, None
        self._pages.clear()
        if browser is not None:
            with contextlib.suppress(Exception):
                await browser.aclose()


# Loading lazily cannot break a nodriver version that touches more of ``cdp`` while importing (that module
# then loads at once): only the events of unloaded modules would be unknown to nodriver's parser, and the
# driver forwards it none but Target events (nodriver 0.50 touches cdp.target, cdp.dom and cdp.util).
# Protects installing the lazy finder: two drivers may prepare at once (two harvesters in one process).
_IMPORT_LOCK = threading.Lock()


class _LazyCdpFinder(importlib.abc.MetaPathFinder):
    """Loads ``nodriver.cdp.*`` (about 60 generated modules, two thirds of nodriver's import time) on first
    use rather than at import: the harvester sends raw CDP and needs only a few of them."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith("nodriver.cdp."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


def import_nodriver() -> ModuleType:
    """Import nodriver with its generated CDP modules loaded lazily (each on its first attribute access)."""
    with _IMPORT_LOCK:
        if "nodriver" in sys.modules:
            return sys.modules["nodriver"]
        finder = _LazyCdpFinder()
        sys.meta_path.insert(0, finder)
        try:
            return importlib.import_module("nodriver")
        finally:
            sys.meta_path.remove(finder)


def create() -> NodriverDriver:
    """Factory used by ``_driver.make_driver``."""
    return NodriverDriver()
