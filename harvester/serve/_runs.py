"""Browser runs for the server: single flight per record, a cap on runs at once, one shared browser.

100 requests for one site with no usable record make one browser run: the first starts it, the others join it.
Across processes (another ``harvest serve``, the daemon), ``harvester.SingleFlight`` holds the cache's per-record
lock and hands a waiter the record the winner stored (in the daemon, the daemon's own ``SingleFlight``, so its
refreshes and the server's runs share one lock table). A run is shielded from the request that started it: a
client that gives up (its ``maxTimeout``) does not cancel the run the others are waiting for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cache import AuthCache, SessionRecord
from harvester._config import Config
from harvester._single_flight import HarvesterLike, SingleFlight
from harvester.daemon._logging import log_event

from ._limits import Gate
from ._metrics import ServeMetrics

if TYPE_CHECKING:
    from harvester._classify import PageState

logger = logging.getLogger("harvest.serve")

#: Seconds the shared browser stays up with no run, before it is closed (the next run launches it again).
BROWSER_IDLE_CLOSE = 60.0


@dataclass(frozen=True, slots=True)
class Harvested:
    """What a run gives every request that started or joined it."""

    record: SessionRecord
    #: The URL the browser opened (the page's own URL may differ after redirects).
    url: str | None
    #: The cleared page as the browser saw it; None when the run took a record another process stored.
    page: PageState | None


class BrowserRuns:
    """Harvests records for the server, one run per record at a time.

    Args:
        cache: where records are read and stored.
        config: base URLs, proxies and the browser path.
        gate: the cap on concurrent runs (joining a run takes no slot).
        metrics: counts runs by outcome.
        harvester: a shared harvester (the daemon's); default: one of our own, launched on first use.
        flight: a shared single flight (the daemon's); default: one of our own over ``harvester``.
    """

    def __init__(
        self,
        cache: AuthCache,
        *,
        config: Config,
        gate: Gate,
        metrics: ServeMetrics,
        harvester: HarvesterLike | None = None,
        flight: SingleFlight | None = None,
        idle_close: float = BROWSER_IDLE_CLOSE,
    ) -> None:
        self._cache = cache
        self._config = config
        self._gate = gate
        self._metrics = metrics
        self._own = harvester is None and flight is None
        self._flight = flight or SingleFlight(cache, harvester=harvester, config=config)
        self._idle_close = idle_close
        # Runs in flight by record name; the one table that decides who runs the browser in this process.
        self._tasks: dict[str, asyncio.Task[Harvested]] = {}
        self._idle_timer: asyncio.TimerHandle | None = None
        self._closers: set[asyncio.Task[None]] = set()  # strong references to browser closes in progress
        self.started = 0  # runs started (the bench and the tests read it)

    @property
    def flight(self) -> SingleFlight:
        """The single flight behind the runs (the gateway's clients use it as their refresher)."""
        return self._flight

    @property
    def in_flight(self) -> int:
        """Runs going on now."""
        return len(self._tasks)

    async def run(
        self,
        name: str,
        *,
        url: str | None,
        provider: str | None = None,
        proxy: str | None,
        stale: SessionRecord | None = None,
        timeout: float | None = None,
    ) -> Harvested:
        """Harvest ``name`` (from ``url``, or the recipe of ``provider``), or join the run already going on.

        A record another process stored meanwhile is taken instead of harvesting when it is fresh, bound to
        ``proxy`` and newer than ``stale`` (the record the caller found unusable).

        Raises:
            Full: a new run would pass the cap.
            HarvestError subclasses from the harvest; CacheError.
        """
        task = self._tasks.get(name)
        if task is None:
            self._gate.enter()
            task = asyncio.create_task(
                self._harvest(name, url, provider, proxy, stale, timeout), name=f"serve-harvest-{name}"
            )
            self._tasks[name] = task
            self.started += 1
            task.add_done_callback(lambda done: self._finished(name, done))
        return await asyncio.shield(task)

    def _finished(self, name: str, task: asyncio.Task[Harvested]) -> None:
        if self._tasks.get(name) is task:
            del self._tasks[name]
        self._gate.leave()
        outcome = "cancelled" if task.cancelled() else "failure" if task.exception() is not None else "success"
        self._metrics.browser_runs.labels(outcome).inc()
        if not self._tasks and self._own:
            self._arm_idle_close()

    async def _harvest(
        self,
        name: str,
        url: str | None,
        provider: str | None,
        proxy: str | None,
        stale: SessionRecord | None,
        timeout: float | None,
    ) -> Harvested:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        log_event(logger, logging.INFO, "serve.harvest", name=name)

        def newer(record: SessionRecord) -> bool:
            fresh = not record.is_expired and (record.proxy or None) == (proxy or None)
            return fresh and (stale is None or record.harvested_at > stale.harvested_at)

        pages: list[PageState] = []
        record = await self._flight.run(
            provider, url=url, name=name, proxy=proxy, timeout=timeout, reuse=newer, on_page=pages.append
        )
        return Harvested(record, url, pages[-1] if pages else None)

    def _arm_idle_close(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = asyncio.get_running_loop().call_later(self._idle_close, self._close_idle)

    def _close_idle(self) -> None:
        self._idle_timer = None
        if self._tasks:
            return
        task = asyncio.create_task(self._flight.harvester.close_browser())
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    async def aclose(self) -> None:
        """Cancel the runs still going on and close the browser we launched."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        pending: list[asyncio.Task[Any]] = [*tasks, *self._closers]
        for waiting in pending:
            with contextlib.suppress(BaseException):
                await waiting
        if self._own:
            await self._flight.aclose()
