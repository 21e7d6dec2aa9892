"""The shared browser of one ``Harvester``: launched on first use, replaced when it died, always torn down.

``SharedBrowser`` owns the Chromium process (``_browser.BrowserProcess``), the driver attached to it and the
identity it presents. Harvests only ask it for the three; they never launch or close anything themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from ._browser import BrowserProcess, find_browser
from ._driver import Driver, make_driver, translate_error
from ._exceptions import HarvestError
from ._identity import Identity, build_identity

CLOSE_TIMEOUT = 5.0  # bound on closing a page or a driver, so teardown never hangs on a dead browser

StepCallback = Callable[[str], None]


class SharedBrowser:
    """One Chromium and its driver for many harvests (each in its own tab and browser context).

    Args:
        backend: the driver (``nodriver`` or ``playwright``).
        headful: launch a visible browser.
        executable: returns the Chromium to launch (read when it launches, so the config loads lazily).
    """

    def __init__(self, backend: str, *, headful: bool, executable: Callable[[], str | None]) -> None:
        self.backend = backend
        self.headful = headful
        self._executable = executable
        self.launches = 0
        self.restarts = 0
        self.process: BrowserProcess | None = None
        self._driver: Driver | None = None
        self._identity: Identity | None = None
        self._closed = False
        # Protects launching and closing the browser, so concurrent harvests start exactly one.
        self._lock = asyncio.Lock()

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
            assert self.process is not None and self._driver is not None and self._identity is not None
            return self.process, self._driver, self._identity

    async def _launch(self, step: StepCallback) -> None:
        step("launching Chromium")
        process = BrowserProcess(find_browser(self._executable()), headful=self.headful)
        driver = make_driver(self.backend)
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
        """Stop the browser (the next ``acquire`` launches a new one, unless ``final``)."""
        async with self._lock:
            self._closed = self._closed or final
            await uncancellable(self._teardown())

    async def _teardown(self) -> None:
        driver, self._driver = self._driver, None
        process, self.process = self.process, None
        self._identity = None
        await close_all(driver, process)


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


async def close_all(driver: Driver | None, process: BrowserProcess | None) -> None:
    """Detach the driver and stop the browser, both at once."""
    # Detaching the driver (playwright waits for its Node process to exit) need not wait for the browser to
    # die, nor the other way round.
    closing = [] if driver is None else [bounded_close(driver.close())]
    stopping = [] if process is None else [process.stop()]
    await asyncio.gather(*closing, *stopping)


def unwrap_group(exc: BaseException) -> BaseException:
    """The first real error out of a TaskGroup; a driver's or connection error becomes ``BrowserError``."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, HarvestError) or not isinstance(exc, Exception):
        return exc
    return translate_error(exc) or exc
