"""Single flight: one browser run per record name, however many callers, tasks or processes ask at once.

This module holds the one lock table for that guarantee: an asyncio lock per record name inside this
``SingleFlight`` (callers in this process queue without a thread each), then ``cache.harvest_lock(name)``
across processes (a file lock beside the cache, or a Redis lock when the cache lives on Redis). A caller
that waited reads the cache under the lock and takes the record the winner stored instead of harvesting.

``SingleFlight`` implements ``providers.Refresher``; the public :func:`harvest` and the daemon's refreshes
go through it too. Nothing here deletes a record: a failed refresh raises and the stale record stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import weakref
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol

from cache import AuthCache, SessionRecord, utcnow

if TYPE_CHECKING:
    from ._classify import PageState
    from ._config import Config
    from ._harvest import Harvester
    from ._recipes import Recipe

StepCallback = Callable[[str], None]
PageCallback = Callable[["PageState"], None]
#: Decides whether a record found in the cache (under the lock) may be returned instead of harvesting.
Reuse = Callable[[SessionRecord], bool]


class HarvesterLike(Protocol):
    """The part of ``harvester.Harvester`` that ``SingleFlight`` and the daemon use; tests pass a fake."""

    @property
    def browser_running(self) -> bool: ...

    @property
    def browser_restarts(self) -> int: ...

    @property
    def headful(self) -> bool: ...

    @property
    def timeout(self) -> float: ...

    def resolve(
        self, provider: str | None, *, url: str | None = None, name: str | None = None, base_url: str | None = None
    ) -> Recipe: ...

    async def harvest(
        self,
        provider: str | None,
        *,
        proxy: str | None = None,
        timeout: float | None = None,
        on_step: StepCallback | None = None,
        recipe: Recipe | None = None,
        on_page: PageCallback | None = None,
    ) -> SessionRecord: ...

    async def close_browser(self) -> None: ...


def _no_step(_: str) -> None:
    return None


class SingleFlight:
    """Harvest records into ``cache``, one browser run per record name at a time (implements ``providers.Refresher``).

    Args:
        cache: where records are read and stored (default: ``AuthCache.open()``, opened on first use).
        harvester: the harvester to run (shared browser); else one is created on first use and closed by
            :meth:`aclose`.
        config, backend, timeout: for the harvester created here (ignored when ``harvester`` is given, except
            ``timeout``, which then bounds each harvest of this single flight).
    """

    def __init__(
        self,
        cache: AuthCache | None = None,
        *,
        harvester: HarvesterLike | None = None,
        config: Config | None = None,
        backend: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self._cache = cache
        self._harvester = harvester
        self._created: Harvester | None = None  # the harvester made here, which aclose() closes
        self._config = config
        self._backend = backend
        self._timeout = timeout
        # The in-process half of the lock table: one asyncio lock per record name (per event loop, as an
        # asyncio lock belongs to one loop). It queues this process's callers before each of them takes
        # the cross-process lock from a thread.
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def harvester(self) -> HarvesterLike:
        """The harvester this single flight runs (created on first use when none was given)."""
        if self._harvester is None:
            from ._harvest import Harvester

            self._harvester = self._created = Harvester(self._backend, timeout=self._timeout, config=self._config)
        return self._harvester

    async def refresh(
        self, name: str, *, stale: SessionRecord | None, base_url: str | None = None, proxy: str | None = None
    ) -> SessionRecord:
        """Return a record of ``name`` newer than ``stale``: one another caller stored, or a new harvest's.

        ``stale`` is the record the caller has (or None); it is never deleted, also when the harvest fails.

        Raises:
            HarvestError subclasses; CacheError from the cache.
        """

        def newer(record: SessionRecord) -> bool:
            return not record.is_expired and (stale is None or record.harvested_at > stale.harvested_at)

        return await self.run(name, base_url=base_url, proxy=proxy, reuse=newer)

    async def run(
        self,
        provider: str | None,
        *,
        url: str | None = None,
        name: str | None = None,
        base_url: str | None = None,
        proxy: str | None = None,
        timeout: float | None = None,
        on_step: StepCallback | None = None,
        reuse: Reuse | None = None,
        on_page: PageCallback | None = None,
    ) -> SessionRecord:
        """Harvest ``provider`` (or ``url``) into the cache under the single-flight locks, and return the record.

        Under the locks, a cached record for which ``reuse(record)`` is true is returned without a harvest
        (None: always harvest). ``on_page`` goes to the harvest (not called when a cached record is reused).
        """
        harvester = self.harvester
        recipe = harvester.resolve(provider, url=url, name=name, base_url=base_url)
        cache = await self._open_cache()
        # The lock waits while another process harvests: give it that harvest's whole budget and then some.
        # Without a timeout, the harvester's own applies (300 s when headful).
        timeout = timeout if timeout is not None else self._timeout
        budget = timeout if timeout is not None else harvester.timeout
        step = on_step or _no_step
        lock = self._locks.setdefault(asyncio.get_running_loop(), {}).setdefault(recipe.name, asyncio.Lock())
        async with lock:
            step("waiting for other harvests of " + recipe.name)
            async with _held_in_thread(cache, recipe.name, budget * 2 + 30.0):
                if reuse is not None:
                    # Fresh: the last holder of the lock may be another node whose write has not reached our view.
                    cached = await asyncio.to_thread(functools.partial(cache.get, recipe.name, fresh=True))
                    if cached is not None and reuse(cached):
                        return cached
                record = await harvester.harvest(
                    provider, recipe=recipe, proxy=proxy, timeout=timeout, on_step=on_step, on_page=on_page
                )
                step("saving to the cache")
                await asyncio.to_thread(cache.put, record)
                return record

    async def aclose(self) -> None:
        """Close the harvester this single flight created (a harvester passed in stays open)."""
        created, self._created = self._created, None
        if created is not None:
            self._harvester = None
            await created.close()

    async def __aenter__(self) -> SingleFlight:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _open_cache(self) -> AuthCache:
        if self._cache is None:
            self._cache = await asyncio.to_thread(AuthCache.open)
        return self._cache


async def harvest(
    provider: str | None,
    *,
    url: str | None = None,
    name: str | None = None,
    base_url: str | None = None,
    proxy: str | None = None,
    backend: str | None = None,
    headful: bool = False,
    timeout: float | None = None,
    cache: AuthCache | None = None,
    force: bool = False,
    harvester: HarvesterLike | None = None,
    config: Config | None = None,
    on_step: StepCallback | None = None,
) -> SessionRecord:
    """Harvest ``provider`` into the cache, once even when many callers ask at the same time.

    A caller that waited for another harvest of the same record gets the record it just stored (fresh, and
    stored since this call began) without running a browser. ``force`` always harvests.

    Args:
        harvester: reuse this harvester's browser (the daemon, ``harvest --all``); else a one-shot one.

    Raises:
        HarvestError subclasses; CacheError from the cache.
    """
    started = utcnow()
    own: Harvester | None = None
    if harvester is None:
        from ._harvest import Harvester

        harvester = own = Harvester(backend, timeout=timeout, headful=headful, config=config)

    def stored_since_we_began(record: SessionRecord) -> bool:
        return not record.is_expired and record.harvested_at >= started

    try:
        return await SingleFlight(cache, harvester=harvester).run(
            provider,
            url=url,
            name=name,
            base_url=base_url,
            proxy=proxy,
            timeout=timeout,
            on_step=on_step,
            reuse=None if force else stored_since_we_began,
        )
    finally:
        if own is not None:
            await own.close()


@contextlib.asynccontextmanager
async def _held_in_thread(cache: AuthCache, name: str, timeout: float) -> AsyncIterator[None]:
    """Hold ``cache.harvest_lock(name)`` from a dedicated thread.

    The lock is a sync context manager that blocks (and a file lock is thread-local), so one thread both
    takes and releases it while the event loop stays free; if we are cancelled while it waits, it releases
    as soon as it gets the lock.
    """
    loop = asyncio.get_running_loop()
    acquired: asyncio.Future[None] = loop.create_future()
    release = threading.Event()

    def settle(error: BaseException | None) -> None:
        if acquired.done():
            return
        if error is None:
            acquired.set_result(None)
        else:
            acquired.set_exception(error)

    def hold() -> None:
        try:
            with cache.harvest_lock(name, timeout=timeout):
                _call_soon(loop, settle, None)
                release.wait()
        except BaseException as exc:  # handed to the waiting coroutine
            _call_soon(loop, settle, exc)

    thread = threading.Thread(target=hold, name=f"harvest-lock-{name}", daemon=True)
    thread.start()
    try:
        await acquired
        yield
    finally:
        release.set()
        if acquired.done() and not acquired.cancelled() and acquired.exception() is None:
            # Wait for the release so the next process sees the lock free as soon as we return.
            await asyncio.to_thread(thread.join, 5.0)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the loop may be closed by then
        loop.call_soon_threadsafe(fn, *args)
