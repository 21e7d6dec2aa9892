"""Run recipes in a browser: the ``Harvester`` (one browser, one context per harvest).

It returns records and never touches the cache; ``_single_flight.py`` stores them, one harvest per name.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar

from cache import Cookie, SessionRecord, utcnow

from ._browser import BrowserProcess, find_browser
from ._classify import PageState, classify
from ._config import Config, load_config
from ._driver import Driver, Page, make_driver, snapshot, translate_error
from ._exceptions import BlockedError, BrowserError, ChallengeTimeout, HarvestError, NeedsHeadfulError
from ._identity import Identity, build_identity, impersonate_target
from ._proxy import parse_proxy
from ._recipes import Recipe, browser_origin, parse_session, resolve_recipe

T = TypeVar("T")
StepCallback = Callable[[str], None]

POLL_INTERVAL = 0.05  # longest wait between page snapshots while a challenge runs (navigations wake it sooner)
SESSION_POLL_INTERVAL = 1.0  # seconds between session reads while a person signs in (--headful)
RELOAD_INTERVAL = 1.0  # seconds between reloads while the site answers 5xx
DEFAULT_TIMEOUT = 30.0  # seconds for each wait of a harvest, unless told otherwise
HEADFUL_TIMEOUT = 300.0  # a person needs longer than a script: the default deadline with --headful
CLOSE_TIMEOUT = 5.0  # bound on closing a page or a driver, so teardown never hangs on a dead browser

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
        config: the loaded config (default: :func:`load_config`), for base URLs, proxies and the browser path.

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
        config: Config | None = None,
    ) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self._config = config
        self.backend = backend or (config.daemon.backend if config else None) or "nodriver"
        self.headful = headful
        self.timeout = timeout if timeout is not None else (HEADFUL_TIMEOUT if headful else DEFAULT_TIMEOUT)
        self.max_concurrent = max_concurrent
        self.browser_restarts = 0
        self.browser_launches = 0
        self._process: BrowserProcess | None = None
        self._driver: Driver | None = None
        self._identity: Identity | None = None
        self._closed = False
        self._in_flight = 0
        # Bounds concurrent harvests: each one is a tab of the shared browser.
        self._slots = asyncio.Semaphore(max_concurrent)
        # Protects launching and closing the browser, so concurrent harvests start exactly one.
        self._browser_lock = asyncio.Lock()

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
        return self._process is not None and self._process.alive

    @property
    def in_flight(self) -> int:
        """How many harvests are running now."""
        return self._in_flight

    async def close_browser(self) -> None:
        """Stop the browser (the next harvest launches a new one). Harvests still running fail with BrowserError."""
        async with self._browser_lock:
            await _uncancellable(self._teardown())

    async def close(self) -> None:
        """Stop the browser and refuse further harvests (idempotent)."""
        self._closed = True
        await self.close_browser()

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
    ) -> SessionRecord:
        """Harvest one provider (or ``url``) and return its record.

        Raises:
            UnknownProviderError, ChallengeTimeout, BlockedError, NeedsHeadfulError, ProxyAuthError, BrowserError.
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
                return await self._harvest(recipe, proxy, timeout or self.timeout, step)
            finally:
                self._in_flight -= 1

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

    # -- the browser -------------------------------------------------------------------------------------

    async def _ensure_browser(self, step: StepCallback) -> tuple[BrowserProcess, Driver, Identity]:
        async with self._browser_lock:
            if self._closed:
                raise RuntimeError("this Harvester is closed")
            if self._process is not None and not self._process.alive:
                # It crashed or was killed: replace it, and count it for the daemon's metrics.
                await _uncancellable(self._teardown())
                self.browser_restarts += 1
            if self._process is None:
                step("launching Chromium")
                process = BrowserProcess(find_browser(self.config.browser.path), headful=self.headful)
                driver = make_driver(self.backend)
                try:
                    # The driver's own start-up (playwright's Node process) overlaps Chromium's.
                    async with asyncio.TaskGroup() as group:
                        group.create_task(process.start())
                        group.create_task(driver.prepare())
                    step("attaching to Chromium")
                    async with asyncio.TaskGroup() as group:
                        connecting = group.create_task(driver.connect(process))
                        asking = group.create_task(process.version())
                    del connecting
                    version = asking.result()
                except BaseException as exc:
                    await _uncancellable(_close_all(driver, process))
                    raise _unwrap_group(exc) from None
                self._process, self._driver = process, driver
                self._identity = build_identity(version.user_agent, version.product)
                self.browser_launches += 1
            assert self._driver is not None and self._identity is not None
            return self._process, self._driver, self._identity

    async def _teardown(self) -> None:
        driver, self._driver = self._driver, None
        process, self._process = self._process, None
        self._identity = None
        await _close_all(driver, process)

    # -- one harvest -------------------------------------------------------------------------------------

    async def _harvest(self, recipe: Recipe, proxy: str | None, timeout: float, step: StepCallback) -> SessionRecord:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            process, driver, identity = await self._ensure_browser(step)
        except HarvestError as exc:
            exc.provider, exc.url = exc.provider or recipe.name, exc.url or recipe.start_url
            raise
        except Exception as exc:
            raise translate_error(exc, provider=recipe.name, url=recipe.start_url) from exc
        page: Page | None = None
        try:
            step("opening a tab")
            page = await _within(driver.new_page(identity=identity, proxy=proxy), deadline, recipe)
            step(f"loading {recipe.start_url}")
            await _within(page.goto(recipe.start_url), deadline, recipe)
            await self._wait_until_cleared(page, process, recipe, deadline, timeout, step)
            api_key = None
            if recipe.session_url:
                step("reading the session")
                api_key = await self._read_session(page, process, recipe, deadline, timeout, step)
            step("collecting cookies")
            cookies = await _within(page.cookies(), deadline, recipe)
        except HarvestError as exc:
            if isinstance(exc, BrowserError) and not process.alive:
                raise _browser_died(process, recipe) from exc
            # A driver's own error (the person closed the tab) knows neither the provider nor the URL.
            exc.provider, exc.url = exc.provider or recipe.name, exc.url or recipe.start_url
            raise
        except ChallengeDeadline as exc:
            raise ChallengeTimeout(
                _deadline_message(recipe, timeout, exc.verdict, headful=self.headful),
                provider=recipe.name,
                url=recipe.start_url,
                timeout=timeout,
            ) from None
        except Exception as exc:
            if not process.alive:
                raise _browser_died(process, recipe) from exc
            raise translate_error(exc, provider=recipe.name, url=recipe.start_url) from exc
        finally:
            if page is not None:
                await _uncancellable(_bounded_close(page.close()))
        return make_record(
            recipe,
            identity,
            cookies,
            api_key=api_key,
            proxy=proxy,
            backend=driver.name,
            now=utcnow(),
        )

    async def _wait_until_cleared(
        self, page: Page, process: BrowserProcess, recipe: Recipe, deadline: float, timeout: float, step: StepCallback
    ) -> PageState:
        loop = asyncio.get_running_loop()
        last_reload = loop.time()
        announced = ""
        verdict: str = "loading"
        try:
            while True:
                state = await self._snapshot(page, process, recipe, deadline)
                verdict = classify(state)
                if verdict != announced and verdict not in ("loading", "cleared"):
                    step(
                        {"challenge": "waiting for the challenge", "unavailable": "the site is failing; retrying"}.get(
                            verdict, f"waiting for a person ({verdict.replace('_', ' ')})"
                        )
                    )
                    announced = verdict
                if verdict == "cleared":
                    return state
                if verdict == "blocked":
                    raise BlockedError(
                        f'{recipe.start_url} answered "Access denied" (HTTP {state.status or "?"}); '
                        "this IP or proxy is blocked: try another --proxy, or later",
                        provider=recipe.name,
                        url=recipe.start_url,
                        status=state.status,
                    )
                if verdict in ("interactive", "login_required") and not self.headful:
                    raise _needs_headful(recipe, "interactive" if verdict == "interactive" else "login")
                now = loop.time()
                if now >= deadline:
                    if verdict == "unavailable":
                        raise BlockedError(
                            f"{recipe.start_url} kept answering HTTP {state.status} for {timeout:g} s; try again later",
                            provider=recipe.name,
                            url=recipe.start_url,
                            status=state.status,
                        )
                    raise ChallengeDeadline
                if verdict == "unavailable" and now - last_reload >= RELOAD_INTERVAL:
                    last_reload = now
                    await _within(page.goto(recipe.start_url), deadline, recipe)
                # Look again as soon as the page navigates or finishes parsing, and at least every POLL_INTERVAL
                # (a challenge may rewrite its DOM without any navigation).
                await page.wait_for_change(min(POLL_INTERVAL, max(0.0, deadline - now)))
        except ChallengeDeadline as exc:
            exc.verdict = verdict  # what the page showed last, for the message
            raise

    async def _snapshot(self, page: Page, process: BrowserProcess, recipe: Recipe, deadline: float) -> PageState:
        try:
            return await _within(snapshot(page), deadline, recipe)
        except (ChallengeDeadline, HarvestError):
            raise
        except Exception as exc:
            # A navigation (the challenge reloading itself) destroys the JS context under us: that is
            # "still loading". A dead browser or a closed connection is not.
            if not process.alive or _is_connection_error(exc):
                raise
            return PageState(ready_state="loading")

    async def _read_session(
        self,
        page: Page,
        process: BrowserProcess,
        recipe: Recipe,
        deadline: float,
        timeout: float,
        step: StepCallback,
    ) -> str:
        loop = asyncio.get_running_loop()
        origin, path = browser_origin(recipe.origin), recipe.session_path or "/"
        script = _SESSION_JS % {"origin": _js_string(origin), "path": _js_string(path)}
        announced = False
        while True:
            try:
                answer = await _within(page.evaluate(script), deadline, recipe)
            except ChallengeDeadline:
                raise _login_timeout(recipe, timeout) from None
            except HarvestError:
                raise
            except Exception:
                if not process.alive:
                    raise
                answer = None  # the person navigated mid-fetch (headful); ask again
            if isinstance(answer, dict) and "elsewhere" in answer:
                if not self.headful:
                    raise _needs_headful(recipe, "login")  # the site sent us off to sign in somewhere else
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
                    raise _needs_headful(recipe, "login")
            if not announced:
                step("waiting for a person (login)")
                announced = True
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _login_timeout(recipe, timeout)
            await asyncio.sleep(min(SESSION_POLL_INTERVAL, remaining))


class ChallengeDeadline(Exception):
    """Internal: the harvest deadline passed inside a wait (turned into ChallengeTimeout with context)."""

    verdict: str | None = None  # what the page showed last, when the wait was for the page to clear


def _needs_headful(recipe: Recipe, reason: str) -> NeedsHeadfulError:
    what = "an interactive challenge" if reason == "interactive" else "a login"
    return NeedsHeadfulError(
        f"{recipe.start_url} needs {what} that only a person can do; run once with `{_headful_command(recipe)}`",
        provider=recipe.name,
        url=recipe.start_url,
        reason=reason,
    )


def _deadline_message(recipe: Recipe, timeout: float, verdict: str | None, *, headful: bool) -> str:
    """What to tell a person whose page had not cleared by the deadline (pure)."""
    if verdict in ("interactive", "login_required"):
        # Only reachable with --headful: a headless harvest stops at the first such page.
        what = "interactive challenge" if verdict == "interactive" else "login"
        return (
            f"nobody completed the {what} at {recipe.start_url} in the browser window within {timeout:g} s; "
            "run again and complete it there (a longer --timeout gives more time)"
        )
    message = f"the challenge at {recipe.start_url} did not clear within {timeout:g} s; retry with a longer --timeout"
    if not headful:
        message += f", or run once with `{_headful_command(recipe)}` to see the page"
    return message


def _browser_died(process: BrowserProcess, recipe: Recipe) -> BrowserError:
    return BrowserError(
        f"{process.describe_exit()} while harvesting {recipe.name}; retry, and check that Chromium runs",
        provider=recipe.name,
        url=recipe.start_url,
    )


def _headful_command(recipe: Recipe) -> str:
    return f"harvest --provider {recipe.name} --headful"


def _login_timeout(recipe: Recipe, timeout: float) -> ChallengeTimeout:
    # Only a person can sign in (a headless harvest stops at the first empty session), so this is headful.
    return ChallengeTimeout(
        f"no signed-in session at {recipe.session_url} within {timeout:g} s; run again and sign in in the "
        "browser window before the deadline",
        provider=recipe.name,
        url=recipe.session_url,
        timeout=timeout,
    )


def _js_string(value: str) -> str:
    import json

    return json.dumps(value)


def make_record(
    recipe: Recipe,
    identity: Identity,
    cookies: list[Cookie],
    *,
    api_key: str | None,
    proxy: str | None,
    backend: str,
    now: datetime,
) -> SessionRecord:
    """Build the record of one harvest (pure).

    ``expires_at`` is the sooner of the proof cookie's expiry and ``now + recipe.ttl``.
    """
    expires_at = now + recipe.ttl
    for cookie in cookies:
        if cookie.name == recipe.proof_cookie and cookie.expires is not None:
            proof = datetime.fromtimestamp(cookie.expires, now.tzinfo)
            expires_at = min(expires_at, proof)
    headers = {**identity.headers(), **recipe.extra_headers()}
    return SessionRecord(
        provider=recipe.name,
        cookies=list(cookies),
        user_agent=identity.user_agent,
        headers=headers,
        api_key=api_key,
        extras={"backend": backend, "ttl_seconds": int(recipe.ttl.total_seconds())},
        proxy=proxy,
        browser=f"Chromium/{identity.major}",
        impersonate=impersonate_target(identity.major),
        origin=recipe.origin,
        harvested_at=now,
        expires_at=expires_at,
    )


# -- small helpers -----------------------------------------------------------------------------------------


async def _within(awaitable: Awaitable[T], deadline: float, recipe: Recipe) -> T:
    """Await under the harvest's deadline; past it, raise ChallengeDeadline."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(max(deadline, loop.time())):
            return await awaitable
    except TimeoutError:
        raise ChallengeDeadline from None


async def _bounded_close(awaitable: Awaitable[None]) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await awaitable


async def _uncancellable(awaitable: Awaitable[None]) -> None:
    """Run teardown to the end even if the caller is cancelled, then re-raise the cancellation."""
    task = asyncio.ensure_future(awaitable)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def _close_all(driver: Driver | None, process: BrowserProcess | None) -> None:
    # Both at once: detaching the driver (playwright waits for its Node process to exit) need not wait for
    # the browser to die, nor the other way round.
    closing = [] if driver is None else [_bounded_close(driver.close())]
    stopping = [] if process is None else [process.stop()]
    await asyncio.gather(*closing, *stopping)


def _unwrap_group(exc: BaseException) -> BaseException:
    """The first real error out of a TaskGroup, translated for the caller."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, HarvestError | asyncio.CancelledError | KeyboardInterrupt | SystemExit | RuntimeError):
        return exc
    return translate_error(exc)


def _is_connection_error(exc: BaseException) -> bool:
    kind = type(exc).__name__
    module = type(exc).__module__ or ""
    return (
        isinstance(exc, ConnectionError | OSError | EOFError)
        or kind in ("TargetClosedError", "ConnectionClosed", "ConnectionClosedError", "ConnectionClosedOK")
        or (module.startswith("websockets") and "Closed" in kind)
    )
