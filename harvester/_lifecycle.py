"""The shared browser of one ``Harvester``: launched on first use, replaced when it died, always torn down.

``SharedBrowser`` owns the Chromium process (``_browser.BrowserProcess``), the driver attached to it and the
identity it presents. Harvests only ask it for the three; they never launch or close anything themselves.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable

from ._browser import BrowserProcess, find_browser
from ._driver import Driver, Page, make_driver, translate_error
from ._exceptions import HarvestError
from ._identity import Identity, build_identity

CLOSE_TIMEOUT = 5.0  # bound on closing a page or a driver, so teardown never hangs on a dead browser

StepCallback = Callable[[str], None]


class SharedBrowser:
    """One Chromium and its driver for many harvests (each in its own tab and browser context).

    Opening a tab costs more than loading a page (Chromium starts a renderer process for each new browser
    context), so the tabs harvests will need can be opened ahead of them: ``open_tabs(n)`` opens ``n`` blank
    tabs now, and ``refill()`` tops them up to ``spare_tabs`` (the first when the browser starts). A spare tab is
    a fresh browser context that never loaded a page; a harvest through a proxy opens its own (the proxy is
    set per context).

    Args:
        backend: the driver (``nodriver`` or ``playwright``).
        headful: launch a visible browser.
        executable: returns the Chromium to launch (read when it launches, so the config loads lazily).
        spare_tabs: blank tabs kept open ahead of the next harvests once the browser runs.
        launched: a Chromium already starting (``BrowserProcess.spawn``), used by the first launch if it is the
            browser that launch would start, else stopped.
        nice: CPU niceness added to the browsers it launches, which cannot undo it (``BrowserProcess(nice=)``; Linux);
            None leaves them as they are.
    """

    def __init__(
        self,
        backend: str,
        *,
        headful: bool,
        executable: Callable[[], str | None],
        spare_tabs: int = 0,
        launched: BrowserProcess | None = None,
        nice: int | None = None,
    ) -> None:
        self.backend = backend
        self.nice = nice
        self.headful = headful
        self.spare_tabs = spare_tabs
        self._executable = executable
        self._launched = launched
        # Blank tabs being opened or open, oldest first; only for the current browser (dropped with it).
        self._spares: collections.deque[asyncio.Task[Page]] = collections.deque()
        self.launches = 0
        self.restarts = 0
        self.process: BrowserProcess | None = None
        self._driver: Driver | None = None
        # The driver of a browser that stopped (idle, or dead), detached and kept for the next launch: playwright's
        # Node driver takes longer to start than Chromium. Closed with the harvester.
        self._kept: Driver | None = None
        self._identity: Identity | None = None
        self._closed = False
        # Protects launching and closing the browser, so concurrent harvests start exactly one.
        self._lock = asyncio.Lock()
        # Pages of finished harvests being closed (strong references, so none is collected mid-flight).
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> bool:
        """True while the browser process is up."""
        return self.process is not None and self.process.alive

    async def acquire(self, step: StepCallback) -> tuple[BrowserProcess, Driver, Identity]:
        """The running browser, its driver and identity; launches (or replaces a dead) one first.

        Raises:
            BrowserError: Chromium cannot be found, started or attached to.
            RuntimeError: closed.
        """
        async with self._lock:
            if self._closed:
                raise RuntimeError("this Harvester is closed")
            if self.process is not None and not self.process.alive:
                # It crashed or was killed: replace it, and count it for the daemon's metrics.
                await uncancellable(self._teardown())
                self.restarts += 1
            if self.process is None:
                await self._launch(step)
                self.refill()
            assert self.process is not None and self._driver is not None and self._identity is not None
            return self.process, self._driver, self._identity

    def open_tabs(self, count: int) -> None:
        """Start opening ``count`` blank tabs for the next harvests to take (no-op before the browser runs)."""
        driver, identity = self._driver, self._identity
        if driver is None or identity is None:
            return
        for _ in range(count):
            self._spares.append(asyncio.ensure_future(driver.new_page(identity=identity)))

    def refill(self) -> None:
        """Open tabs until ``spare_tabs`` are open or opening (call it when no harvest runs: starting a renderer
        takes CPU time a harvest's page would otherwise have)."""
        self.open_tabs(self.spare_tabs - len(self._spares))

    async def new_page(self, *, proxy: str | None = None) -> Page:
        """A tab for one harvest: a spare one when there is one (and no proxy), else a newly opened one.

        Raises:
            RuntimeError: the browser is not running (``acquire`` first).
        """
        driver, identity = self._driver, self._identity
        if driver is None or identity is None:
            raise RuntimeError("SharedBrowser.new_page() before acquire()")
        while proxy is None and self._spares:
            opening = self._spares.popleft()
            try:
                # Cancelling this harvest cancels the opening too, which then disposes of its context.
                page = await opening
            except Exception:
                continue  # this browser is dying or gone: the next try (or a fresh tab) says how
            if page.is_open():
                return page
            await bounded_close(page.close())  # its renderer crashed while it waited
        return await driver.new_page(identity=identity, proxy=proxy)

    def close_later(self, page: Page) -> None:
        """Close a finished harvest's page (and dispose of its context) without waiting for it; the browser's
        teardown finishes or cancels what is still closing."""
        closing = asyncio.ensure_future(bounded_close(page.close()))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def _launch(self, step: StepCallback) -> None:
        step("launching Chromium")
        process, self._launched = self._launched, None
        try:
            executable = find_browser(self._executable())
        except BaseException:
            if process is not None:
                await uncancellable(process.stop())
            raise
        if process is not None and (process.executable, process.headful) != (executable, self.headful):
            await uncancellable(process.stop())  # started for another browser than the config names
            process = None
        process = process or BrowserProcess(executable, headful=self.headful, nice=self.nice)
        driver, self._kept = self._kept or make_driver(self.backend), None
        try:
            # The driver's own start-up (importing nodriver, playwright's Node process) overlaps Chromium's.
            async with asyncio.TaskGroup() as group:
                group.create_task(process.start())
                group.create_task(driver.prepare())
            step("attaching to Chromium")
            async with asyncio.TaskGroup() as group:
                group.create_task(driver.connect(process))
                asking = group.create_task(process.version())
            version = asking.result()
        except BaseException as exc:
            await uncancellable(close_all(driver, process))
            raise unwrap_group(exc) from None
        self.process, self._driver = process, driver
        self._identity = build_identity(version.user_agent, version.product)
        self.launches += 1

    async def stop(self, *, final: bool = False) -> None:
        """Stop the browser (the next ``acquire`` launches a new one, unless ``final``: then the driver goes too)."""
        async with self._lock:
            self._closed = self._closed or final
            await uncancellable(self._teardown())

    async def _teardown(self) -> None:
        """Stop the browser; detach its driver and keep it for the next launch, or close it once closed for good."""
        launched, self._launched = self._launched, None
        if launched is not None:
            await launched.stop()  # started early for a launch that never came
        spares, self._spares = list(self._spares), collections.deque()
        for opening in spares:
            opening.cancel()
        # Their contexts die with the browser: a close still in flight only has to end.
        closing, self._closing = list(self._closing), set()
        for task in closing:
            task.cancel()
        if closing:
            await asyncio.wait(closing, timeout=CLOSE_TIMEOUT)
        driver, self._driver = self._driver, None
        process, self.process = self.process, None
        self._identity = None
        # With no browser running there is no driver but perhaps a kept one; never both.
        driver, self._kept = driver or self._kept, None
        await close_all(driver, process, keep_driver=not self._closed)
        if not self._closed:
            self._kept = driver
        # Their tabs died with the browser; collect the tasks (and their errors). With the connection gone,
        # a cancelled opening's clean-up fails at once, but it stays bounded all the same.
        if spares:
            await asyncio.wait(spares, timeout=CLOSE_TIMEOUT)
            for opening in spares:
                if opening.done() and not opening.cancelled():
                    opening.exception()  # retrieved: the browser is gone, so is whatever it says


async def bounded_close(awaitable: Awaitable[None]) -> None:
    """Await a close under ``CLOSE_TIMEOUT``, ignoring its errors (the thing is going away anyway)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await awaitable


async def uncancellable(awaitable: Awaitable[None]) -> None:
    """Run teardown to the end even if the caller is cancelled, then re-raise the cancellation."""
    task = asyncio.ensure_future(awaitable)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def close_all(driver: Driver | None, process: BrowserProcess | None, *, keep_driver: bool = False) -> None:
    """Close the driver (only detach it, if ``keep_driver``) and stop the browser, both at once."""
    # Closing the driver (playwright waits for its Node process to exit) need not wait for the browser to
    # die, nor the other way round.
    closing = [] if driver is None else [bounded_close(driver.disconnect() if keep_driver else driver.close())]
    stopping = [] if process is None else [process.stop()]
    await asyncio.gather(*closing, *stopping)


def unwrap_group(exc: BaseException) -> BaseException:
    """The first real error out of a TaskGroup; a driver's or connection error becomes ``BrowserError``."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, HarvestError) or not isinstance(exc, Exception):
        return exc
    return translate_error(exc) or exc
