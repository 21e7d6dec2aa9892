"""The one small interface between the harvester and a browser driver, and the one place driver errors
are translated.

A driver attaches to a Chromium that ``_browser.BrowserProcess`` launched, and opens pages, each in its own
browser context (own cookie jar, own proxy). Only ``_nodriver.py`` and ``_playwright.py`` import a driver
library, and only when a harvest actually runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from cache import Cookie

from ._browser import BrowserProcess
from ._classify import PageState
from ._exceptions import BrowserError, HarvestError, ProxyAuthError
from ._identity import Identity
from ._proxy import ProxySettings, proxy_refused

Backend = Literal["nodriver", "playwright"]
BACKENDS: tuple[Backend, ...] = ("nodriver", "playwright")
DEFAULT_BACKEND: Backend = "nodriver"

# One round trip that tells the classifier everything it needs. The document's HTTP status comes from the
# Navigation Timing entry, so it is right after the challenge page reloads itself too.
SNAPSHOT_JS = """(() => {
  const nav = performance.getEntriesByType("navigation")[0];
  const root = document.documentElement;
  return {
    url: location.href,
    status: nav && nav.responseStatus ? nav.responseStatus : null,
    title: document.title || "",
    html: root ? root.outerHTML.slice(0, 500000) : "",
    ready: document.readyState,
  };
})()"""

# CDP events after which the page may classify differently: a committed navigation, DOMContentLoaded (when
# readyState leaves "loading") and load.
WAKE_EVENTS = frozenset({"Page.frameNavigated", "Page.domContentEventFired", "Page.loadEventFired"})


class PageScriptError(Exception):
    """A script we ran in the page threw (typically: the page navigated away in the middle of it)."""


class Page(Protocol):
    """One tab in its own browser context."""

    async def goto(self, url: str) -> None:
        """Start navigating to ``url`` and return once the navigation is committed."""
        ...

    async def evaluate(self, expression: str) -> Any:
        """Evaluate a JS expression in the page (awaiting a promise) and return its JSON value.

        Raises ``PageScriptError`` when the script throws (a driver may raise its own protocol error instead).
        """
        ...

    async def wait_for_change(self, timeout: float) -> None:
        """Return once the document may have changed since the last call (a navigation committed,
        DOMContentLoaded, load), or after ``timeout`` seconds, whichever is first."""
        ...

    async def cookies(self) -> list[Cookie]:
        """Every cookie of this page's browser context, with all attributes."""
        ...

    def is_open(self) -> bool:
        """False once the tab is closed or gone (closed by us, by a person, or its renderer crashed)."""
        ...

    def cookie_set_at(self, name: str) -> float | None:
        """When (event loop time) a response of this page first set the cookie ``name``; None if none has."""
        ...

    def document_response(self) -> DocumentResponse | None:
        """The main frame's last document response (its URL, status and headers); None before the first."""
        ...

    async def close(self) -> None:
        """Close the tab and dispose of its browser context (idempotent)."""
        ...


@dataclass(frozen=True, slots=True)
class DocumentResponse:
    """A main-frame document's response as the browser received it (CDP ``Network.responseReceived``)."""

    url: str
    status: int
    #: Lower-case names; a repeated field keeps its last value (as ``harvest serve``'s own fetches give them).
    headers: dict[str, str] = field(repr=False, compare=False)


def response_headers(headers: object) -> dict[str, str]:
    """CDP response headers with lower-case names and, for a repeated field (CDP joins the values with
    newlines), its last value."""
    if not isinstance(headers, dict):
        return {}
    return {str(name).lower(): str(value).rsplit("\n", 1)[-1].strip() for name, value in headers.items()}


class PageSignals:
    """What both drivers' pages learn from their events: the document may have changed, or the proxy turned the
    browser away. Base of ``NodriverPage`` and ``PlaywrightPage``, so ``wait_for_change`` exists once."""

    def __init__(self, proxy: ProxySettings | None) -> None:
        self._proxy = proxy
        # Set by an event that may change how the page classifies; cleared by each wait.
        self._changed = asyncio.Event()
        # Set once the proxy refused us (407); every later call raises it.
        self._refused: ProxyAuthError | None = None
        # Cookie name -> when a response first set it (from the Set-Cookie headers Chromium reports).
        self._cookies_set: dict[str, float] = {}
        # The main frame's id (its target's id, in Chromium), once the driver knows it, and the last document
        # response seen for that frame.
        self.main_frame: str | None = None
        self._document: DocumentResponse | None = None

    def _on_change(self, *_: object) -> None:
        self._changed.set()

    def _on_response_extra_info(self, params: dict[str, Any]) -> None:
        """CDP ``Network.responseReceivedExtraInfo``: the raw headers, Set-Cookie included, as they arrive."""
        names = set_cookie_names(params.get("headers"))
        if names:
            now = asyncio.get_running_loop().time()
            for name in names:
                self._cookies_set.setdefault(name, now)
            self._changed.set()  # a clearance: the page moves on next

    def cookie_set_at(self, name: str) -> float | None:
        return self._cookies_set.get(name)

    def _on_response_received(self, params: dict[str, Any]) -> None:
        """CDP ``Network.responseReceived``: keep the main frame's document response (status and headers)."""
        if params.get("type") != "Document" or self.main_frame is None or params.get("frameId") != self.main_frame:
            return
        response = params.get("response") or {}
        status = response.get("status")
        self._document = DocumentResponse(
            url=str(response.get("url") or ""),
            status=int(status) if isinstance(status, int | float) else 0,
            headers=response_headers(response.get("headers")),
        )

    def document_response(self) -> DocumentResponse | None:
        return self._document

    def _refuse(self) -> None:
        if self._refused is None and self._proxy is not None:
            self._refused = proxy_refused(self._proxy)
        self._changed.set()

    async def wait_for_change(self, timeout: float) -> None:
        """Return once the document may have changed, or after ``timeout`` seconds; raise a proxy refusal."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()
        self._changed.clear()
        if self._refused is not None:
            raise self._refused


class Driver(Protocol):
    """A CDP client attached to one running browser."""

    name: str

    async def prepare(self) -> None:
        """Do the driver's own start-up (may run while the browser launches)."""
        ...

    async def connect(self, process: BrowserProcess) -> None:
        """Attach to the running browser."""
        ...

    async def new_page(self, *, identity: Identity, proxy: str | None = None) -> Page:
        """Open a blank tab in a fresh browser context that presents ``identity``."""
        ...

    async def disconnect(self) -> None:
        """Detach from the browser, keeping what the next :meth:`connect` (to a new browser) can reuse, such as
        playwright's Node driver (idempotent; never raises)."""
        ...

    async def close(self) -> None:
        """Detach from the browser and release the driver's resources (idempotent; never raises)."""
        ...


def make_driver(backend: str | None) -> Driver:
    """Create the driver for ``backend`` (default nodriver), importing its library only now.

    Raises:
        ValueError: an unknown backend name.
    """
    name = backend or DEFAULT_BACKEND
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    module = importlib.import_module(f"harvester._{name}")
    driver: Driver = module.create()
    return driver


async def snapshot(page: Page) -> PageState:
    """Read the page's URL, status, title, HTML and ready state in one round trip."""
    data = await page.evaluate(SNAPSHOT_JS)
    if not isinstance(data, dict):
        return PageState(ready_state="loading")
    status = data.get("status")
    url = str(data.get("url") or "")
    headers = None
    document = page.document_response()
    if (
        document is not None
        and document.url.partition("#")[0] == url.partition("#")[0]
        and (not isinstance(status, int) or document.status == status)
    ):
        # The response of the document the script read, not of one loading at the same URL (a challenge page
        # reloading itself): the same URL and the same status, else no headers (and the status stays the page's).
        status, headers = status if isinstance(status, int) else document.status, document.headers
    return PageState(
        url=url,
        status=status if isinstance(status, int) else None,
        title=str(data.get("title") or ""),
        html=str(data.get("html") or ""),
        ready_state=str(data.get("ready") or "loading"),
        headers=headers,
    )


def set_cookie_names(headers: object) -> list[str]:
    """The cookie names a response's raw headers set (CDP joins repeated Set-Cookie headers with newlines)."""
    if not isinstance(headers, dict):
        return []
    names = []
    for key, value in headers.items():
        if str(key).lower() == "set-cookie" and isinstance(value, str):
            for line in value.split("\n"):
                name, equals, _ = line.partition("=")
                if equals and name.strip():
                    names.append(name.strip())
    return names


def cookie_from_cdp(data: dict[str, Any]) -> Cookie:
    """A CDP ``Network.Cookie`` (or a playwright cookie dict, same keys) as the cache's ``Cookie``."""
    raw_expires = data.get("expires")
    expires = float(raw_expires) if isinstance(raw_expires, int | float) else -1.0
    session = bool(data.get("session")) or expires < 0
    same_site = data.get("sameSite")
    return Cookie(
        name=str(data.get("name", "")),
        value=str(data.get("value", "")),
        domain=str(data.get("domain", "")),
        path=str(data.get("path") or "/"),
        expires=None if session else expires,
        http_only=bool(data.get("httpOnly", False)),
        secure=bool(data.get("secure", False)),
        same_site=same_site if same_site in ("Strict", "Lax", "None") else None,
    )


# Module prefixes of the libraries whose errors mean "the browser is gone or not answering".
_DRIVER_MODULES = ("nodriver", "playwright", "websockets", "aiohttp")


def translate_error(exc: BaseException, *, provider: str | None = None, url: str | None = None) -> HarvestError | None:
    """Map an error from a driver, its WebSocket or the connection to a ``HarvestError``; None for any other.

    Only what is known is mapped (matched by module name, so this module never imports a driver library): a
    ``KeyError`` or an ``AttributeError`` is a bug in our code, not a dead browser, and the caller lets it
    through. A ``HarvestError`` passes through unchanged.
    """
    if isinstance(exc, HarvestError):
        return exc
    module = type(exc).__module__ or ""
    kind = type(exc).__name__
    if module.startswith("playwright") and kind == "TimeoutError":
        message = f"the browser did not answer in time ({_first_line(exc)})"
    elif is_driver_error(exc):
        message = f"lost the browser: {kind}: {_first_line(exc)}"
    elif isinstance(exc, TimeoutError):
        message = "the browser did not answer in time"
    else:
        return None
    error = BrowserError(
        message + "; check that Chromium runs (`chromium --version`) and retry", provider=provider, url=url
    )
    error.__cause__ = exc
    return error


def is_connection_error(exc: BaseException) -> bool:
    """True for an error that means the connection to the browser (or a tab's target) is gone."""
    kind = type(exc).__name__
    module = type(exc).__module__ or ""
    return (
        isinstance(exc, ConnectionError | OSError | EOFError)
        or kind in ("TargetClosedError", "ConnectionClosed", "ConnectionClosedError", "ConnectionClosedOK")
        or (module.startswith("websockets") and "Closed" in kind)
    )


def is_driver_error(exc: BaseException) -> bool:
    """True for an error of a driver library, its WebSocket, or the connection (the browser is gone or mute)."""
    module = type(exc).__module__ or ""
    return module.startswith(_DRIVER_MODULES) or isinstance(exc, ConnectionError | EOFError | OSError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""
