"""The refresh daemon: keeps every configured provider's record fresh in the shared cache, for weeks.

Shape (uvicorn's ``server.py``): signal handlers only set flags and wake the main loop; the main loop
reloads the config, closes an idle browser and, on a stop flag, shuts down in order:

1. stop scheduling (pause APScheduler);
2. wait for in-flight harvests under ``shutdown_timeout``;
3. cancel the rest (the harvester tears their tabs down) and log how many;
4. stop the status server, close the browser, write the final status.

Scheduling is APScheduler's ``AsyncIOScheduler`` with one ``DateTrigger`` job per provider
(``coalesce=True, max_instances=1``). A run returns the time of the next one and a job listener re-adds the
job: the listener runs after APScheduler has released the job's instance slot, so a retry due at once is
never dropped as "maximum number of running instances reached".

Memory stays flat: per-provider state is replaced in place, tasks leave the task set when they finish, and
nothing keeps a history.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.metadata
import logging
import os
import random
import re
import signal
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
    JobExecutionEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from cache import AuthCache, CacheError, SessionRecord, utcnow
from harvester._browser import remove_stale_profiles
from harvester._exceptions import BrowserError, HarvestError
from harvester._single_flight import HarvesterLike, SingleFlight

from ._logging import LOGGER_NAME, SecretRegistry, log_event
from ._metrics import DaemonMetrics, Outcome
from ._schedule import RandomSource, backoff_delay, next_refresh
from ._settings import DaemonSettings
from ._status import (
    HEARTBEAT_INTERVAL,
    HEARTBEAT_TTL,
    ProviderState,
    add_cluster,
    build_report,
    heartbeat_document,
    status_document,
    status_path,
    write_status,
)

if TYPE_CHECKING:
    from harvester.serve import ServeApp

logger = logging.getLogger(LOGGER_NAME)

# How often the main loop wakes with nothing to do: the granularity of the idle-browser check.
_TICK = 0.5
_NODE = socket.gethostname()  # names this daemon in heartbeats on a shared cache


def _harvest_version() -> str:
    try:
        return importlib.metadata.version("harvest")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


_VERSION = _harvest_version()
# After cancelling, the harvests' own teardown (closing their tabs) gets this long.
_CANCEL_GRACE = 2.0


#: Builds the shared harvester for the settings; entering it starts nothing (the browser starts lazily).
HarvesterFactory = Callable[[DaemonSettings], AbstractAsyncContextManager[HarvesterLike]]
#: Re-reads the config on SIGHUP; raises (``ConfigError``) to keep the old settings.
SettingsLoader = Callable[[], DaemonSettings]


def default_harvester_factory(settings: DaemonSettings) -> AbstractAsyncContextManager[HarvesterLike]:
    """Build the real ``Harvester``: one browser, launched lazily, ``max_concurrent`` tabs at most."""
    from harvester import Harvester  # imported here so the daemon's tests can run without a browser driver

    harvester: AbstractAsyncContextManager[HarvesterLike] = Harvester(
        backend=settings.backend,
        timeout=settings.harvest_timeout,
        max_concurrent=settings.max_concurrent,
        # A blank tab kept open: a due refresh starts with its page load, not with a renderer's start-up.
        spare_tabs=1,
        config=settings.config,
        browser_nice=settings.browser_nice,
    )
    return harvester


# Header names whose values are credentials; the others (client hints, Origin, Referer) are not secret, and
# redacting them by value would shred ordinary lines that mention the origin.
_SECRET_HEADER = re.compile(r"(?i)auth|cookie|token|key|secret|session")


def _record_secrets(record: SessionRecord) -> list[str | None]:
    values: list[str | None] = [cookie.value for cookie in record.cookies]
    values.append(record.api_key)
    values.extend(value for name, value in record.headers.items() if _SECRET_HEADER.search(name))
    return values


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Daemon:
    """Refresh every configured provider ahead of expiry, sharing one browser.

    Args:
        settings: the daemon's settings (``DaemonSettings.from_config(load_config(path))``).
        cache: the cache the records are written to; the status file lives beside it.
        harvester_factory: builds the shared harvester (a fake one in tests).
        reload: re-reads the settings on SIGHUP (None: SIGHUP is logged and ignored).
        secrets: the registry the log formatter redacts by value.
        rng: the random source for jitter (a seeded one in tests).
    """

    def __init__(
        self,
        settings: DaemonSettings,
        *,
        cache: AuthCache,
        harvester_factory: HarvesterFactory = default_harvester_factory,
        reload: SettingsLoader | None = None,
        secrets: SecretRegistry | None = None,
        rng: RandomSource | None = None,
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.status_file = status_path(cache.path)
        self._factory = harvester_factory
        self._reload = reload
        self._secrets = secrets or SecretRegistry()
        self._rng: RandomSource = rng or random.Random()
        self.states: dict[str, ProviderState] = {name: ProviderState(name) for name in settings.providers}
        self._harvester: HarvesterLike | None = None
        self._flight: SingleFlight | None = None  # every refresh goes through it (set with the harvester)
        self._browser_replacements = 0  # browsers the daemon closed after a BrowserError (a metric)
        self.metrics = DaemonMetrics(
            harvested_at=lambda: {n: s.record_harvested_at for n, s in self.states.items()},
            browser_restarts=lambda: (
                self._browser_replacements + (self._harvester.browser_restarts if self._harvester is not None else 0)
            ),
            browser_running=lambda: self._harvester is not None and self._harvester.browser_running,
        )
        self.server: ServeApp | None = None
        self.started_at = utcnow()
        # Flags set by signal handlers (or by tests calling ``request_*``); only the main loop acts on them.
        self.should_exit = False
        self.force_exit = False
        self.reload_requested = False
        self._wake = asyncio.Event()
        self._scheduler: AsyncIOScheduler | None = None
        # Strong references to running harvests, so none is garbage-collected mid-flight.
        self._tasks: set[asyncio.Task[datetime | None]] = set()
        self._inflight: dict[str, asyncio.Task[datetime | None]] = {}
        # Protects the browser's lifecycle: an idle close and the start of a harvest never interleave.
        self._browser_lock = asyncio.Lock()
        # Serialises status-file writes, so an older document never replaces a newer one.
        self._status_lock = asyncio.Lock()
        self._status_dirty = False
        self._next_heartbeat = 0.0  # monotonic time of the next heartbeat on a shared cache
        self._daemon_id = f"{_NODE}:{os.getpid()}:{random.getrandbits(24):06x}"  # unique even in one process
        self._last_activity = time.monotonic()
        self._browser_used = False  # a harvest ran since the browser was last closed
        self._stopping = False
        self._last_signal = ""

    # -- flags (signal handlers and tests) --------------------------------------------------------------

    def request_exit(self, *, force: bool = False) -> None:
        """Ask the main loop to shut down (a second request skips waiting for in-flight harvests)."""
        if self.should_exit:
            force = True
        self.should_exit = True
        self.force_exit = self.force_exit or force
        self._wake.set()

    def request_reload(self) -> None:
        """Ask the main loop to re-read the config."""
        self.reload_requested = True
        self._wake.set()

    def _on_signal(self, signum: int) -> None:
        # Runs inside the event loop (loop.add_signal_handler): only set flags, the main loop acts.
        if signum == signal.SIGHUP:
            self.request_reload()
            return
        self._last_signal = signal.Signals(signum).name
        self.request_exit()

    # -- the main loop ------------------------------------------------------------------------------------

    async def serve(self, *, started: Callable[[Daemon], Awaitable[None] | None] | None = None) -> int:
        """Run until asked to exit; return the exit code (0 after a clean shutdown).

        Args:
            started: called once everything is up (tests use it to learn the status server's port).
        """
        loop = asyncio.get_running_loop()
        installed = self._install_signal_handlers(loop)
        try:
            async with AsyncExitStack() as stack:
                # Profiles left by harvests that were SIGKILLed (the next launch would also remove them).
                await asyncio.to_thread(remove_stale_profiles)
                self._harvester = await stack.enter_async_context(self._factory(self.settings))
                self._flight = SingleFlight(self.cache, harvester=self._harvester)
                # The server binds before anything is scheduled, so a taken port fails before any harvest.
                if self.settings.listen:
                    # The `harvest serve` app, sharing this daemon's cache and browser, plus /status.
                    from harvester.serve import daemon_server

                    self.server = daemon_server(
                        self.settings.listen,
                        cache=self.cache,
                        config=self.settings.config,
                        harvester=self._harvester,
                        flight=self._flight,
                        status=self.report,
                        metrics=self.metrics.exposition,
                        healthy=lambda: not self.should_exit,
                    )
                    await self.server.start()
                    stack.push_async_callback(self.server.stop)
                # Runs on every way out (a bug included), before the server stops and the browser closes.
                stack.push_async_callback(self._shutdown)
                await self._start_scheduler(loop)
                log_event(
                    logger,
                    logging.INFO,
                    "daemon.started",
                    pid=os.getpid(),
                    providers=",".join(self.settings.providers) or "-",
                    backend=self.settings.backend or "default",
                    max_concurrent=self.settings.max_concurrent,
                    listen=f"{self.server.host}:{self.server.port}" if self.server else None,
                    status_file=str(self.status_file),
                )
                await self._write_status()
                if started is not None:
                    result = started(self)
                    if result is not None:
                        await result
                await self._main_loop()
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
        await self._write_status(running=False)
        await self._heartbeat(stopping=True)
        log_event(logger, logging.INFO, "daemon.stopped", signal=self._last_signal or None)
        return 0

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        # Signals can only be handled on the main thread; a daemon embedded elsewhere is stopped by flags.
        if threading.current_thread() is not threading.main_thread():
            return []
        installed: list[int] = []
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self._on_signal, signum)
            installed.append(signum)
        return installed

    async def _main_loop(self) -> None:
        while not self.should_exit:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _TICK)
            self._wake.clear()
            if self.should_exit:
                break
            if self.reload_requested:
                self.reload_requested = False
                await self._apply_reload()
            await self._close_idle_browser()
            if self._status_dirty:
                await self._write_status()
                self._next_heartbeat = 0.0  # a change (a refresh) is published at once, not at the next beat
            await self._heartbeat()

    async def _shutdown(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        log_event(logger, logging.INFO, "daemon.stopping", signal=self._last_signal or None, inflight=len(self._tasks))
        # 1. stop scheduling: no new run starts from here on.
        if self._scheduler is not None:
            self._scheduler.pause()
        # 2. let in-flight harvests finish under the deadline (a second signal cuts it short).
        deadline = time.monotonic() + self.settings.shutdown_timeout
        while self._tasks and not self.force_exit and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=min(_TICK / 5, max(deadline - time.monotonic(), 0)))
        # 3. cancel the rest; each harvest's own teardown closes its tab.
        leftover = set(self._tasks)
        if leftover:
            log_event(logger, logging.WARNING, "daemon.cancelling", count=len(leftover))
            for task in leftover:
                task.cancel()
            _, stuck = await asyncio.wait(leftover, timeout=_CANCEL_GRACE)
            if stuck:
                log_event(logger, logging.ERROR, "daemon.cancel_stuck", count=len(stuck))
        # 4. the scheduler (nothing left to cancel in its executor); the browser closes with the exit stack.
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    # -- scheduling ---------------------------------------------------------------------------------------

    async def _start_scheduler(self, loop: asyncio.AbstractEventLoop) -> None:
        scheduler = AsyncIOScheduler(
            event_loop=loop,
            timezone=UTC,
            # misfire_grace_time=None: a run that is late (a suspended laptop) still runs, once (coalesce).
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        scheduler.add_listener(
            self._on_job_event, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES
        )
        scheduler.start()
        self._scheduler = scheduler
        for name in self.settings.providers:
            await self._schedule_initial(name)

    async def _schedule_initial(self, name: str) -> None:
        """Schedule a provider from its cached record: missing or expired means now."""
        try:
            # AuthCache is safe to share between threads: reads see one whole file, writes hold its lock.
            record = await asyncio.to_thread(self.cache.get, name)
        except CacheError as exc:
            # Unreadable now (a key rotated under us?): harvest at once; the put will say what is wrong.
            log_event(logger, logging.ERROR, "cache.read_failed", provider=name, error=_describe(exc))
            record = None
        state = self.states[name]
        if record is not None:
            state.record_harvested_at, state.record_expires_at = record.harvested_at, record.expires_at
            self._secrets.set(name, _record_secrets(record))
            await self._export(record)  # the files exist from the start, not only after the first refresh
        when = self._next_for(name, record.harvested_at if record else None, record.expires_at if record else None)
        self._schedule(name, when)

    def _next_for(self, name: str, harvested_at: datetime | None, expires_at: datetime | None) -> datetime:
        spec = self.settings.providers.get(name)
        return next_refresh(
            utcnow(),
            harvested_at=harvested_at,
            expires_at=expires_at,
            refresh_interval=spec.refresh_interval if spec else None,
            policy=self.settings.policy,
            rng=self._rng,
        )

    def _schedule(self, name: str, when: datetime) -> None:
        scheduler = self._scheduler
        if scheduler is None or self._stopping or name not in self.settings.providers:
            return
        self.states[name].next_run = when
        self._status_dirty = True
        self._wake.set()
        scheduler.add_job(
            self._fire,
            trigger=DateTrigger(run_date=when, timezone=UTC),
            args=(name,),
            id=name,
            name=f"refresh {name}",
            replace_existing=True,
        )
        log_event(logger, logging.INFO, "refresh.scheduled", provider=name, at=when)

    def _on_job_event(self, event: JobEvent) -> None:
        # Called by APScheduler on the loop thread, after it released the job's instance slot.
        name = event.job_id
        if self._stopping or name not in self.settings.providers:
            return
        if isinstance(event, JobExecutionEvent) and event.code == EVENT_JOB_EXECUTED:
            if isinstance(event.retval, datetime):
                self._schedule(name, event.retval)
            return
        # An error escaping _fire (a bug), or a run skipped by APScheduler: retry under the backoff, unless
        # a run is still going (it will reschedule itself) or another job is already queued.
        if name in self._inflight or (self._scheduler is not None and self._scheduler.get_job(name) is not None):
            return
        state = self.states[name]
        delay = backoff_delay(max(state.consecutive_failures, 1), self.settings.policy, self._rng)
        log_event(logger, logging.WARNING, "refresh.rescheduled", provider=name, apscheduler_event=event.code)
        self._schedule(name, utcnow() + timedelta(seconds=delay))

    async def _fire(self, name: str) -> datetime | None:
        """The APScheduler job: run the refresh as a task of our own and return its next run time.

        The refresh runs in a task the daemon owns (strong reference in ``_tasks``), shielded from
        APScheduler's executor, which swallows cancellation and would cut the shutdown order short.
        """
        if self._stopping or name in self._inflight:
            return None
        async with self._browser_lock:  # an idle close in progress finishes before this harvest starts
            task = asyncio.get_running_loop().create_task(self._refresh(name), name=f"refresh:{name}")
            self._tasks.add(task)
            self._inflight[name] = task
        task.add_done_callback(self._tasks.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            # Our own shutdown cancelled the refresh: nothing to schedule. (Cancellation of this wrapper by
            # APScheduler's executor is swallowed by APScheduler anyway.)
            return None
        finally:
            if self._inflight.get(name) is task and task.done():
                del self._inflight[name]

    async def _refresh(self, name: str) -> datetime | None:
        """Harvest one provider into the cache (via ``SingleFlight``) and return when to refresh it next."""
        spec = self.settings.providers.get(name)
        flight = self._flight
        if spec is None or flight is None:
            return None
        state = self.states[name]
        state.running, state.next_run = True, None
        self._status_dirty = True
        self._last_activity = time.monotonic()
        self._browser_used = True
        log_event(logger, logging.INFO, "harvest.started", provider=name)
        started = time.monotonic()
        outcome: Outcome = "failure"
        try:
            # Single flight with every other harvest of this provider, in this process and in others (the
            # CLI, a provider client healing). When another one ran while we waited, this returns the record it
            # stored instead of running the browser again; else it stores ours.
            began = utcnow()
            known = state.record_harvested_at

            def reuse(cached: SessionRecord) -> bool:
                if cached.is_expired:
                    return False
                if cached.harvested_at >= began:  # another harvest ran while we waited for the lock
                    return True
                # Another node (or process) refreshed it since we last looked, and by our own schedule it is not
                # due yet: reschedule from its record instead of running the browser again (one per cycle).
                newer = known is None or cached.harvested_at > known
                return newer and self._next_for(name, cached.harvested_at, cached.expires_at) > utcnow()

            record = await flight.run(
                name,
                url=spec.url,
                base_url=spec.base_url,
                proxy=spec.proxy,
                timeout=self.settings.harvest_timeout,
                reuse=reuse,
            )
            self._secrets.set(name, _record_secrets(record))
        except asyncio.CancelledError:
            outcome = "cancelled"
            log_event(logger, logging.WARNING, "harvest.cancelled", provider=name)
            raise
        except Exception as exc:
            # Any failure, expected (HarvestError, CacheError) or not, costs one backoff step, never the daemon.
            return await self._failed(name, state, exc)
        else:
            outcome = "success"
            now = utcnow()
            state.last_success, state.consecutive_failures, state.last_error = now, 0, None
            state.harvests += 1
            state.record_harvested_at, state.record_expires_at = record.harvested_at, record.expires_at
            when = self._next_for(name, record.harvested_at, record.expires_at)
            state.next_run = when  # the job listener schedules it; the status shows it from now on
            log_event(
                logger,
                logging.INFO,
                "harvest.ok",
                provider=name,
                seconds=time.monotonic() - started,
                cookies=len(record.cookies),
                expires_at=record.expires_at,
                next_run=when,
            )
            await self._export(record)
            return when
        finally:
            self.metrics.observe(name, outcome, time.monotonic() - started)
            state.running = False
            self._status_dirty = True
            self._last_activity = time.monotonic()
            self._wake.set()  # the main loop writes the status file

    async def _failed(self, name: str, state: ProviderState, exc: Exception) -> datetime:
        state.last_failure, state.last_error = utcnow(), _describe(exc)
        state.consecutive_failures += 1
        state.failures += 1
        delay = backoff_delay(state.consecutive_failures, self.settings.policy, self._rng)
        when = utcnow() + timedelta(seconds=delay)
        state.next_run = when  # the job listener schedules it; the status shows it from now on
        known = isinstance(exc, HarvestError | CacheError)
        log_event(
            logger,
            logging.WARNING if known else logging.ERROR,
            "harvest.failed",
            provider=name,
            error=state.last_error,
            failures=state.consecutive_failures,
            retry_in=delay,
        )
        if not known:
            # A bug, not a site or browser failure: the traceback at error level, and the browser is kept.
            logger.error(
                "harvest.internal_error",
                exc_info=exc,
                extra={"event": "harvest.internal_error", "fields": {"provider": name, "report": "please report this"}},
            )
        harvester = self._harvester
        if isinstance(exc, BrowserError) and harvester is not None and harvester.browser_running:
            # The browser is up but failed us (a hung CDP connection): replace it now, unless another harvest
            # is using it. A browser that died is replaced, and counted, by the harvester's next launch.
            with contextlib.suppress(Exception):
                async with self._browser_lock:
                    if len(self._inflight) <= 1:
                        await harvester.close_browser()
                        self._browser_replacements += 1
                        log_event(logger, logging.WARNING, "browser.replaced", reason="browser error")
        return when

    async def _export(self, record: SessionRecord) -> None:
        """Rewrite the record's ``[daemon] export`` files; a failure is logged, never raised."""
        from cache._export_files import export_records

        for target in self.settings.exports:
            try:
                [path] = await asyncio.to_thread(export_records, [record], target.dir, target.format)
            except (ValueError, OSError) as exc:  # ExportError is a ValueError: a bad directory or record
                log_event(
                    logger,
                    logging.ERROR,
                    "export.failed",
                    provider=record.provider,
                    format=target.format,
                    dir=str(target.dir),
                    error=_describe(exc),
                )
            else:
                log_event(logger, logging.INFO, "export.written", provider=record.provider, path=str(path))

    # -- the browser and the config ------------------------------------------------------------------------

    async def _close_idle_browser(self) -> None:
        # Keyed on "a harvest ran since the last close", not on browser_running: a browser that died while
        # idle still has a profile directory to remove, and close_browser() is what removes it.
        harvester = self._harvester
        if harvester is None or self._inflight or not self._browser_used:
            return
        idle = time.monotonic() - self._last_activity
        if idle < self.settings.browser_idle_close:
            return
        async with self._browser_lock:
            if self._inflight:
                return
            was_running = harvester.browser_running
            await harvester.close_browser()
            self._browser_used = False
        log_event(logger, logging.INFO, "browser.closed", reason="idle" if was_running else "dead", idle_seconds=idle)

    async def _apply_reload(self) -> None:
        if self._reload is None:
            log_event(logger, logging.WARNING, "config.reload_unsupported")
            return
        try:
            new = await asyncio.to_thread(self._reload)
        except Exception as exc:
            log_event(logger, logging.ERROR, "config.reload_failed", error=_describe(exc), kept="previous")
            return
        old = self.settings
        added = [n for n in new.providers if n not in old.providers]
        removed = [n for n in old.providers if n not in new.providers]
        changed = [n for n in new.providers if n in old.providers and new.providers[n] != old.providers[n]]
        stale = old.restart_needed(new)
        # Settings that only a restart applies keep their old values, so what runs matches what is logged.
        self.settings = dataclasses.replace(new, **{key: getattr(old, key) for key in stale})
        for name in removed:
            if self._scheduler is not None and self._scheduler.get_job(name) is not None:
                self._scheduler.remove_job(name)
            # An in-flight harvest of a removed provider finishes untouched; it is just not rescheduled.
            self.states.pop(name, None)
            self._secrets.discard(name)
            self.metrics.forget(name)
        for name in added:
            self.states[name] = ProviderState(name)
            await self._schedule_initial(name)
        for name in changed:
            if name not in self._inflight and self._scheduler is not None and self._scheduler.get_job(name):
                state = self.states[name]
                if state.consecutive_failures == 0:
                    self._schedule(name, self._next_for(name, state.record_harvested_at, state.record_expires_at))
        self._status_dirty = True
        log_event(
            logger,
            logging.INFO,
            "config.reloaded",
            added=",".join(added) or None,
            removed=",".join(removed) or None,
            changed=",".join(changed) or None,
            restart_needed=",".join(stale) or None,
        )

    # -- status ---------------------------------------------------------------------------------------------

    async def _write_status(self, *, running: bool = True) -> None:
        self._status_dirty = False
        document = status_document(self.states, pid=os.getpid(), started_at=self.started_at, running=running)
        async with self._status_lock:
            try:
                await asyncio.to_thread(write_status, self.status_file, document)
            except OSError as exc:
                log_event(logger, logging.ERROR, "status.write_failed", error=_describe(exc))

    async def _heartbeat(self, *, stopping: bool = False) -> None:
        """On a shared cache (Redis), publish this daemon's heartbeat every few seconds, with a TTL."""
        storage = self.cache.storage
        put = getattr(storage, "put_heartbeat", None)
        if put is None or (not stopping and time.monotonic() < self._next_heartbeat):
            return
        self._next_heartbeat = time.monotonic() + HEARTBEAT_INTERVAL
        daemon_id = self._daemon_id
        try:
            if stopping:
                await asyncio.to_thread(storage.drop_heartbeat, daemon_id)  # type: ignore[attr-defined]
                return
            document = heartbeat_document(
                self.states, node=_NODE, pid=os.getpid(), version=_VERSION, started_at=self.started_at
            )
            await asyncio.to_thread(put, daemon_id, document, HEARTBEAT_TTL)
        except CacheError as exc:
            log_event(logger, logging.WARNING, "heartbeat.failed", error=_describe(exc))

    async def heartbeats(self) -> list[dict[str, Any]] | None:
        """Every live daemon on this cache (None when the cache is not shared)."""
        beats = getattr(self.cache.storage, "heartbeats", None)
        if beats is None:
            return None
        try:
            return list(await asyncio.to_thread(beats))
        except CacheError:
            return None

    async def report(self) -> dict[str, Any]:
        """Return the status report (what ``harvest status --json`` and ``GET /status`` show)."""
        document = status_document(
            self.states, pid=os.getpid(), started_at=self.started_at, running=not self.should_exit
        )
        records: Mapping[str, SessionRecord] | None
        try:
            listed = await asyncio.to_thread(self.cache.list)
            records = {record.provider: record for record in listed}
        except Exception:
            records = None
        return add_cluster(build_report(document, records, check_pid=False), await self.heartbeats())

    @property
    def inflight(self) -> int:
        """How many harvests are running now."""
        return len(self._tasks)
