"""Run recipes in a browser: the ``Harvester`` (one shared browser, one tab and browser context per harvest).

This module is the I/O loop only: it opens the tab, loads the page, takes snapshots and carries out what
``_wait.next_action`` decides. The browser's lifecycle is ``_lifecycle.SharedBrowser``, the record is built
by ``_record.make_record``, and storing it once per name is ``_single_flight.SingleFlight``'s job.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from cache import SessionRecord, utcnow

from ._browser import BrowserProcess
from ._classify import PageState, Verdict, classify
from ._config import Config, load_config
from ._driver import Driver, Page, PageScriptError, is_connection_error, is_driver_error, snapshot, translate_error
from ._exceptions import BlockedError, BrowserError, ChallengeTimeout, HarvestError
from ._identity import Identity
from ._lifecycle import SharedBrowser, bounded_close, uncancellable
from ._proxy import parse_proxy
from ._recipes import Recipe, browser_origin, parse_session, resolve_recipe
from ._record import make_record
from ._wait import Cleared, Fail, Progress, Reload, Wait, announcement, deadline_error, needs_headful, next_action

T = TypeVar("T")
StepCallback = Callable[[str], None]
#: Called with the snapshot of the cleared page (``Harvester.harvest``'s ``on_page``).
PageCallback = Callable[[PageState], None]

SESSION_POLL_INTERVAL = 1.0  # seconds between session reads while a person signs in (--headful)
DEFAULT_TIMEOUT = 30.0  # seconds for each wait of a harvest, unless told otherwise
HEADFUL_TIMEOUT = 300.0  # a person needs longer than a script: the default deadline with --headful
OPEN_TAB_TIMEOUT = 15.0  # opening a tab is the browser's work, not the site's: a short --timeout does not bound it

# Off the site's origin (a person signing in at an identity provider) a relative fetch would ask that other
# site, so only report where the page is.
_SESSION_JS = """(async () => {
  if (location.origin !== %(origin)s) return {elsewhere: location.origin};
  const r = await fetch(%(path)s, {credentials: "include", headers: {accept: "application/json"}});
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch (e) {}
  return {status: r.status, json: json};
})()"""


def _no_step(_: str) -> None:
    return None


class Harvester:
    """Harvests sessions with one browser, launched on first use and reused; one browser context per harvest.

    Args:
        backend: ``"nodriver"`` (default) or ``"playwright"``.
        timeout: the deadline in seconds for each wait of a harvest; default 30 s, or 300 s with ``headful``
            (a person needs longer than a script). A timeout given explicitly is used as given.
        headful: open a visible browser and wait for a person (a login, an interactive challenge).
        max_concurrent: harvests at once (each a tab of the one browser).
        spare_tabs: blank tabs kept open once the browser runs, so that a harvest starts with its page load
            rather than with opening a tab (each costs a renderer process; the daemon keeps one).
        config: the loaded config (default: :func:`load_config`), for base URLs, proxies and the browser path.
        launched: a Chromium already starting (``BrowserProcess.spawn``; the ``harvest`` command starts it before
            its imports), which the first launch uses if it is the browser it would start (else stops it).
        browser_nice: CPU niceness added to the browser (0 to 19, Linux), which Chromium then cannot raise any of
            its threads above (as root it would raise some to -8), so that a background harvester (the daemon)
            never outranks interactive work on its host; default None: the browser runs as it likes.

    ``harvest()`` returns a ``SessionRecord`` and does not touch the cache. Use as ``async with``, or call
    :meth:`close`.
    """

    def __init__(
        self,
        backend: str | None = None,
        *,
        timeout: float | None = None,
        headful: bool = False,
        max_concurrent: int = 2,
        spare_tabs: int = 0,
        config: Config | None = None,
        launched: BrowserProcess | None = None,
        browser_nice: int | None = None,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        if spare_tabs < 0:
            raise ValueError("spare_tabs must not be negative")
        self._config = config
        self.backend = backend or (config.daemon.backend if config else None) or "nodriver"
        self.headful = headful
        self.timeout = timeout if timeout is not None else (HEADFUL_TIMEOUT if headful else DEFAULT_TIMEOUT)
        self.max_concurrent = max_concurrent
        self.browser_nice = browser_nice
        self._browser = SharedBrowser(
            self.backend,
            headful=headful,
            executable=lambda: self.config.browser.path,
            spare_tabs=spare_tabs,
            launched=launched,
            nice=browser_nice,
        )
        self._closed = False
        self._in_flight = 0
        # Bounds concurrent harvests: each one is a tab of the shared browser.
        self._slots = asyncio.Semaphore(max_concurrent)

    async def __aenter__(self) -> Harvester:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def config(self) -> Config:
        """The config in use (loaded on first use when none was given)."""
        if self._config is None:
            self._config = load_config()
        return self._config

    @property
    def browser_running(self) -> bool:
        """True while this harvester's browser process is up."""
        return self._browser.running

    @property
    def browser_launches(self) -> int:
        """Browsers launched so far."""
        return self._browser.launches

    @property
    def browser_restarts(self) -> int:
        """Browsers that died and were replaced by a new launch."""
        return self._browser.restarts

    @property
    def in_flight(self) -> int:
        """How many harvests are running now."""
        return self._in_flight

    async def start(self, on_step: StepCallback | None = None, *, tabs: int = 0) -> None:
        """Launch the browser now, rather than on the first harvest (so it starts while the caller does other
        work: opening the cache, reading the config). Harvests that begin meanwhile wait for this launch.

        Args:
            on_step: called with each progress step.
            tabs: blank tabs to open right away for the harvests about to start (those without a proxy take
                them); returns without waiting for them.

        Raises:
            BrowserError: Chromium cannot be found, started or attached to.
            RuntimeError: the harvester is closed.
        """
        await self._browser.acquire(on_step or _no_step)
        self._browser.open_tabs(tabs)

    async def close_browser(self) -> None:
        """Stop the browser (the next harvest launches a new one). Harvests still running fail with BrowserError."""
        await self._browser.stop()

    async def close(self) -> None:
        """Stop the browser and refuse further harvests (idempotent)."""
        self._closed = True
        await self._browser.stop(final=True)

    async def harvest(
        self,
        provider: str | None,
        *,
        url: str | None = None,
        name: str | None = None,
        base_url: str | None = None,
        proxy: str | None = None,
        timeout: float | None = None,
        on_step: StepCallback | None = None,
        recipe: Recipe | None = None,
        on_page: PageCallback | None = None,
    ) -> SessionRecord:
        """Harvest one provider (or ``url``) and return its record.

        ``on_page`` is called with the last snapshot of the cleared page (its URL, status, title and HTML, the
        HTML cut at 500,000 characters), before the cookies are read: ``harvest serve`` answers with it.

        Raises:
            UnknownProviderError, ChallengeTimeout, BlockedError, NeedsHeadfulError, ProxyAuthError,
            SiteUnreachableError, BrowserError, InvalidURLError.
            ValueError: a proxy URL Chromium cannot use (credentials for a SOCKS proxy).
            RuntimeError: the harvester is closed.
        """
        if self._closed:
            raise RuntimeError("this Harvester is closed")
        if recipe is None:
            recipe = self.resolve(provider, url=url, name=name, base_url=base_url)
        proxy = proxy or self.config.provider(recipe.name).proxy
        if proxy:
            parse_proxy(proxy)  # a proxy Chromium cannot use fails here (ValueError), before a browser starts
        step = on_step or _no_step
        async with self._slots:
            self._in_flight += 1
            try:
                return await self._harvest(recipe, proxy, timeout or self.timeout, step, on_page)
            finally:
                self._in_flight -= 1
                if self._in_flight == 0 and not self._closed:
                    # Between harvests, not during one: a renderer's start-up would slow a running page.
                    self._browser.refill()

    def resolve(
        self, provider: str | None, *, url: str | None = None, name: str | None = None, base_url: str | None = None
    ) -> Recipe:
        """The recipe a harvest of ``provider`` (or ``url``) would run, rebased per CLI, env and config."""
        key = name or provider
        config_url = self.config.provider(key).url if key else None
        config_base = self.config.base_url(key) if key else None
        return resolve_recipe(
            provider,
            url=url or config_url,
            name=name,
            base_url=base_url,
            config_base_url=config_base,
        )

    async def _ensure_browser(self, step: StepCallback) -> tuple[BrowserProcess, Driver, Identity]:
        return await self._browser.acquire(step)

    # -- one harvest -------------------------------------------------------------------------------------

    async def _harvest(
        self, recipe: Recipe, proxy: str | None, timeout: float, step: StepCallback, on_page: PageCallback | None = None
    ) -> SessionRecord:
        loop = asyncio.get_running_loop()
        try:
            # Launching has its own deadline (BrowserProcess.start_timeout), and so has opening the tab: the
            # harvest's own clock starts with the page, so a slow start-up never eats the page's time.
            process, driver, identity = await self._browser.acquire(step)
        except HarvestError as exc:
            _about(exc, recipe)
            raise
        except Exception as exc:
            error = translate_error(exc, provider=recipe.name, url=recipe.start_url)
            if error is None:
                raise  # a bug, not a browser failure
            raise error from exc
        run = _Run(recipe, process, loop.time(), timeout, headful=self.headful)
        page: Page | None = None
        try:
            step("opening a tab")
            page = await run.within(self._browser.new_page(proxy=proxy), opening=True)
            run.started = loop.time()
            step(f"loading {recipe.start_url}")
            await run.within(page.goto(recipe.start_url))
            cleared = await self._wait_until_cleared(page, run, step)
            if on_page is not None:
                on_page(cleared)
            api_key = None
            if recipe.session_url:
                step("reading the session")
                api_key = await self._read_session(page, run, step)
            step("collecting cookies")
            cookies = await run.within(page.cookies())
            # The record is in hand: disposing of the context (15-30 ms of the browser's time) need not delay it.
            self._browser.close_later(page)
            page = None
        except HarvestError as exc:
            if isinstance(exc, BrowserError) and not process.alive:
                raise _browser_died(process, recipe) from exc
            _about(exc, recipe)
            raise
        except _Deadline as exc:
            raise run.deadline_error(exc) from None
        except Exception as exc:
            if not process.alive:
                raise _browser_died(process, recipe) from exc
            error = translate_error(exc, provider=recipe.name, url=recipe.start_url)
            if error is None:
                raise  # a bug, not a browser failure: the caller reports it as one
            raise error from exc
        finally:
            if page is not None:
                await uncancellable(bounded_close(page.close()))
        return make_record(recipe, identity, cookies, api_key=api_key, proxy=proxy, backend=driver.name, now=utcnow())

    async def _wait_until_cleared(self, page: Page, run: _Run, step: StepCallback) -> PageState:
        """Snapshot the page and carry out what ``next_action`` decides, until it says cleared (returning that
        snapshot) or fails."""
        loop = asyncio.get_running_loop()
        last_reload = loop.time()
        announced: Verdict = "loading"
        while True:
            state = await self._snapshot(page, run)
            verdict = classify(state)
            run.saw(state, verdict)
            line = announcement(verdict)
            if line and verdict != announced:
                step(line)
                announced = verdict
            now = loop.time()
            proof = page.cookie_set_at(run.recipe.proof_cookie) if run.recipe.proof_cookie else None
            progress = run.progress(
                now, since_reload=now - last_reload, since_proof=None if proof is None else now - proof
            )
            action = next_action(run.recipe, state, verdict, progress)
            if isinstance(action, Cleared):
                return state
            if isinstance(action, Fail):
                raise action.error
            if isinstance(action, Reload):
                last_reload = now
                await run.within(page.goto(run.recipe.start_url))
            elif isinstance(action, Wait):
                # Look again as soon as a response sets a cookie, the page navigates or finishes parsing,
                # and at least every POLL_INTERVAL (a challenge may rewrite its DOM without any navigation).
                await page.wait_for_change(action.seconds)

    async def _snapshot(self, page: Page, run: _Run) -> PageState:
        try:
            return await run.within(snapshot(page))
        except (_Deadline, HarvestError):
            raise
        except Exception as exc:
            # A navigation (the challenge reloading itself) destroys the JS context under us: that is
            # "still loading". A dead browser, a closed connection or a bug in our code is not.
            if not run.process.alive or not _is_page_churn(exc):
                raise
            return PageState(ready_state="loading")

    async def _read_session(self, page: Page, run: _Run, step: StepCallback) -> str:
        loop = asyncio.get_running_loop()
        recipe = run.recipe
        origin, path = browser_origin(recipe.origin), recipe.session_path or "/"
        script = _SESSION_JS % {"origin": json.dumps(origin), "path": json.dumps(path)}
        announced = False
        while True:
            try:
                answer = await run.within(page.evaluate(script))
            except _Deadline:
                raise _login_timeout(recipe, run.timeout) from None
            except HarvestError:
                raise
            except Exception as exc:
                if not run.process.alive or not _is_page_churn(exc):
                    raise
                answer = None  # the person navigated mid-fetch (headful); ask again
            if isinstance(answer, dict) and "elsewhere" in answer:
                if not self.headful:
                    raise needs_headful(recipe, "login")  # the site sent us off to sign in somewhere else
                answer = None  # the person is signing in on another site; wait until they are back
            if isinstance(answer, dict):
                status = answer.get("status")
                key = parse_session(answer.get("json"))
                if key:
                    return key
                if status not in (200, None):
                    raise BlockedError(
                        f"{recipe.session_url} answered HTTP {status}; retry later",
                        provider=recipe.name,
                        url=recipe.session_url,
                        status=status if isinstance(status, int) else None,
                    )
                if not self.headful:
                    raise needs_headful(recipe, "login")
            if not announced:
                step("waiting for a person (login)")
                announced = True
            remaining = run.deadline - loop.time()
            if remaining <= 0:
                raise _login_timeout(recipe, run.timeout)
            await asyncio.sleep(min(SESSION_POLL_INTERVAL, remaining))


class _Deadline(Exception):
    """Internal: the harvest's deadline passed inside an awaited call (``_Run.deadline_error`` says why)."""

    def __init__(self, *, opening: bool = False) -> None:
        super().__init__()
        self.opening = opening  # while opening the tab: the browser, not the site, was slow


@dataclass
class _Run:
    """One harvest's clock and what its page has shown so far (for the message when the deadline passes)."""

    recipe: Recipe
    process: BrowserProcess
    started: float
    timeout: float
    headful: bool = False
    shown: Verdict = "loading"  # the last verdict other than "loading"
    status: int | None = None  # the last HTTP status the page showed
    answered: bool = False  # the site answered at all

    @property
    def deadline(self) -> float:
        return self.started + self.timeout

    def saw(self, state: PageState, verdict: Verdict) -> None:
        if verdict != "loading":
            self.shown = verdict
        if state.status is not None:
            self.status = state.status
        self.answered = self.answered or state.status is not None or verdict != "loading"

    def progress(self, now: float, *, since_reload: float = 0.0, since_proof: float | None = None) -> Progress:
        return Progress(
            elapsed=now - self.started,
            timeout=self.timeout,
            since_reload=since_reload,
            since_proof=since_proof,
            answered=self.answered,
            headful=self.headful,
            shown=self.shown,
        )

    async def within(self, awaitable: Awaitable[T], *, opening: bool = False) -> T:
        """Await under the harvest's deadline (opening the tab: at least ``OPEN_TAB_TIMEOUT``); past it, raise
        ``_Deadline``."""
        loop = asyncio.get_running_loop()
        deadline = max(self.deadline, loop.time() + OPEN_TAB_TIMEOUT) if opening else self.deadline
        try:
            async with asyncio.timeout_at(max(deadline, loop.time())):
                return await awaitable
        except TimeoutError:
            raise _Deadline(opening=opening) from None

    def deadline_error(self, exc: _Deadline) -> HarvestError:
        if exc.opening:
            return BrowserError(
                "the browser did not open a tab in time; retry, and check that Chromium runs",
                provider=self.recipe.name,
                url=self.recipe.start_url,
            )
        progress = self.progress(self.started + self.timeout)
        return deadline_error(self.recipe, self.shown, self.status, progress)


def _about(exc: HarvestError, recipe: Recipe) -> None:
    # A driver's own error (the person closed the tab) knows neither the provider nor the URL.
    exc.provider, exc.url = exc.provider or recipe.name, exc.url or recipe.start_url


def _is_page_churn(exc: BaseException) -> bool:
    """An error of a call into a page that a navigation interrupted (the JS context went away), not a dead
    browser: a script error in the page, or a driver's protocol error other than a closed connection."""
    return isinstance(exc, PageScriptError) or (is_driver_error(exc) and not is_connection_error(exc))


def _browser_died(process: BrowserProcess, recipe: Recipe) -> BrowserError:
    return BrowserError(
        f"{process.describe_exit()} while harvesting {recipe.name}; retry, and check that Chromium runs",
        provider=recipe.name,
        url=recipe.start_url,
    )


def _login_timeout(recipe: Recipe, timeout: float) -> ChallengeTimeout:
    # Only a person can sign in (a headless harvest stops at the first empty session), so this is headful.
    return ChallengeTimeout(
        f"no signed-in session at {recipe.session_url} within {timeout:g} s; run again and sign in in the "
        "browser window before the deadline",
        provider=recipe.name,
        url=recipe.session_url,
        timeout=timeout,
    )
