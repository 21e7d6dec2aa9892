"""``harvest --provider NAME`` (and ``--all``, ``--url``): harvest once into the cache and exit.

The root click group in ``harvester/cli/_app.py`` forwards its options to :func:`run`. This module runs the
targets concurrently (one tab each in one browser, up to ``[daemon] max_concurrent``), shows progress on
stderr (with ``-v``, each step and a per-phase breakdown), prints one line per target in the order asked,
and returns the worst exit code.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from cache import AuthCache, CacheError, RecordError, SessionRecord, normalize_name, utcnow
from cache._export import expires_in
from harvester.cli import _exit

from .._config import Config, load_config
from .._exceptions import (
    BlockedError,
    BrowserError,
    ChallengeTimeout,
    ConfigError,
    HarvestError,
    InvalidURLError,
    NeedsHeadfulError,
    ProxyAuthError,
    SiteUnreachableError,
    UnknownProviderError,
)
from .._recipes import RECIPES, check_url, known_providers

if TYPE_CHECKING:
    from .._browser import BrowserProcess
    from .._phases import Timeline

# Most specific first; a HarvestError of no other class is a browser failure, and anything else is a bug.
_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (UnknownProviderError, _exit.USAGE),
    (ConfigError, _exit.USAGE),
    (InvalidURLError, _exit.USAGE),
    # Wrong or missing proxy credentials: like a bad flag, retrying the same command cannot help.
    (ProxyAuthError, _exit.USAGE),
    (ChallengeTimeout, _exit.CHALLENGE_TIMEOUT),
    (BlockedError, _exit.BLOCKED),
    (NeedsHeadfulError, _exit.NEEDS_HEADFUL),
    (SiteUnreachableError, _exit.SITE_UNREACHABLE),
    (BrowserError, _exit.BROWSER_FAILED),
    (CacheError, _exit.CACHE_ERROR),
    (HarvestError, _exit.BROWSER_FAILED),
    # A record that fails the cache's rules (a name, a cookie with a newline): bad input, not a bug.
    (RecordError, _exit.USAGE),
)


def exit_code_for(error: BaseException) -> int:
    """The exit code for an error from a harvest."""
    for kind, code in _EXIT_CODES:
        if isinstance(error, kind):
            return code
    return _exit.INTERNAL_ERROR


def run(*, launched: BrowserProcess | None = None, **options: Any) -> int:
    """Harvest the providers the options name into the cache; return the exit code.

    Options are the root group's: providers, all_providers, url, name, backend, headful, proxy, timeout,
    base_url, cache_path, verbose. ``launched``: the Chromium ``harvester._entry`` started before the imports
    (stopped by the caller if this returns before using it).
    """
    providers: list[str] = list(known_providers() if options.get("all_providers") else options.get("providers") or ())
    url: str | None = options.get("url")
    unknown = [p for p in providers if p not in RECIPES]
    if unknown:
        _error(f"unknown provider {unknown[0]!r}; known providers: {', '.join(known_providers())}")
        return _exit.USAGE
    if options.get("name") and not url and len(providers) > 1:
        _error("--name names one record: use it with --url or a single --provider")
        return _exit.USAGE
    if options.get("name"):
        try:
            options["name"] = normalize_name(options["name"], "--name")
        except ValueError as exc:
            _error(str(exc))
            return _exit.USAGE
    for flag, value in (("--url", url), ("--base-url", options.get("base_url"))):
        if value is not None:
            try:
                check_url(value, what=flag)
            except InvalidURLError as exc:
                _error(str(exc))
                return _exit.USAGE
    timeout: float | None = options.get("timeout")  # None: 30 s, or 300 s with --headful
    if timeout is not None and timeout <= 0:
        _error("--timeout must be positive")
        return _exit.USAGE
    try:
        config = load_config()
    except ConfigError as exc:
        _error(str(exc))
        return _exit.USAGE
    targets: list[tuple[str | None, str | None]] = [(p, None) for p in providers]
    if url:
        targets.append((None, url))
    return asyncio.run(_main(targets, options, config, timeout, launched))


async def _main(
    targets: list[tuple[str | None, str | None]],
    options: dict[str, Any],
    config: Config,
    timeout: float | None,
    launched: BrowserProcess | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    work = asyncio.ensure_future(_harvest_all(targets, options, config, timeout, launched))
    received: list[int] = []

    def on_signal(signum: int) -> None:
        # A one-shot has no loop to poll a flag, so the flag is recorded and the work cancelled; its
        # teardown (closing the browser, deleting the profile) is shielded from the cancellation.
        received.append(signum)
        work.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await work
    except asyncio.CancelledError:
        if not received:
            raise
        name = signal.Signals(received[0]).name
        _error(f"interrupted by {name}; the browser was closed and nothing was saved")
        return 128 + received[0]
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _harvest_all(
    targets: list[tuple[str | None, str | None]],
    options: dict[str, Any],
    config: Config,
    timeout: float | None,
    launched: BrowserProcess | None,
) -> int:
    from .._harvest import Harvester
    from .._phases import Timeline
    from .._single_flight import harvest

    verbose = bool(options.get("verbose"))
    status = _Status(verbose)
    # Every target at once, each a tab of one browser, unless the config bounds it ([daemon] max_concurrent).
    limit = min(config.daemon.max_concurrent or len(targets), len(targets))
    harvester = Harvester(
        options.get("backend"),
        timeout=timeout,
        headful=bool(options.get("headful")),
        max_concurrent=max(1, limit),
        config=config,
        launched=launched,
    )

    async def one(provider: str | None, url: str | None, label: str) -> _Outcome:
        timeline = Timeline()

        def step(text: str) -> None:
            timeline.step(text)
            status.step(label, text)

        started = time.monotonic()
        status.update(f"{label}: starting")
        try:
            record = await harvest(
                provider,
                url=url,
                name=options.get("name"),
                base_url=options.get("base_url"),
                proxy=options.get("proxy"),
                timeout=timeout,
                cache=cache,
                harvester=harvester,
                on_step=step,
            )
        except Exception as exc:  # reported in order, below
            timeline.end()
            return _Outcome(label, exc, time.monotonic() - started, timeline)
        timeline.end()
        return _Outcome(label, record, time.monotonic() - started, timeline)

    worst = _exit.OK
    browser = Timeline()

    def launch_step(text: str) -> None:
        browser.step(text)
        status.update(f"browser: {text}")

    # A tab for every target, opened as soon as the browser runs (while the cache opens); a target with a
    # proxy opens its own (the proxy is set per browser context).
    tabs = sum(1 for provider, _ in targets if not (options.get("proxy") or _config_proxy(config, provider, options)))

    async def launch() -> None:
        try:
            await harvester.start(launch_step, tabs=tabs)
        finally:
            browser.end()

    # Chromium starts now, while the cache opens (a key to read, maybe a passphrase to derive), not after.
    launching = asyncio.ensure_future(launch())
    try:
        try:
            cache = await asyncio.to_thread(AuthCache.open, path=options.get("cache_path"))
        except CacheError as exc:
            status.stop()
            _error(str(exc))
            return _exit.CACHE_ERROR
        labels = [provider or options.get("name") or url or "?" for provider, url in targets]
        tasks = [asyncio.ensure_future(one(p, u, label)) for (p, u), label in zip(targets, labels, strict=True)]
        try:
            # In the order asked for, each as soon as it and the ones before it are done.
            for task in tasks:
                outcome = await task
                status.stop()
                worst = max(worst, _report(outcome, verbose))
            # A failed launch is each harvest's to report (each tried again): only its timing is shown here.
            await asyncio.gather(launching, return_exceptions=True)
            if verbose and browser.durations:
                _log(f"browser: {browser.describe()}")
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        status.stop()
        launching.cancel()
        await asyncio.gather(launching, return_exceptions=True)
        closing = time.monotonic()
        await harvester.close()
        if verbose:
            _log(f"closed the browser in {time.monotonic() - closing:.2f} s")
    return worst


def _config_proxy(config: Config, provider: str | None, options: dict[str, Any]) -> str | None:
    """The proxy the config sets for a target (its provider, or the ``--name`` of a ``--url`` target)."""
    key = provider or options.get("name")
    return config.provider(key).proxy if key else None


@dataclass(frozen=True, slots=True)
class _Outcome:
    label: str
    result: SessionRecord | BaseException
    elapsed: float
    timeline: Timeline


def _report(outcome: _Outcome, verbose: bool) -> int:
    """Print one target's line (stdout) or error (stderr) and return its exit code."""
    result = outcome.result
    if isinstance(result, SessionRecord):
        click.echo(summary_line(result, elapsed=outcome.elapsed, now=utcnow()))
        if verbose:
            _log(f"{outcome.label}: {outcome.timeline.describe()}")
        return _exit.OK
    if isinstance(result, HarvestError | CacheError | RecordError):
        _error(f"{outcome.label}: {result}")
        return exit_code_for(result)
    # Not an error we know: a bug. Say so, with the traceback; the other targets still report.
    internal_error(result, where=outcome.label)
    return _exit.INTERNAL_ERROR


def summary_line(record: SessionRecord, *, elapsed: float, now: datetime) -> str:
    """One line about a record with no secrets: provider, cookie count, whether it has a key, expiry."""
    count = len(record.cookies)
    expiry = expires_in(record, now)  # "never", "52 min" or "expired 2 min ago"
    parts = [
        f"{record.provider}: {count} cookie{'s' if count != 1 else ''}",
        f"api key {'yes' if record.api_key else 'no'}",
        expiry if expiry.startswith("expired") else f"expires in {expiry}",
        f"{record.browser or 'browser'}, {elapsed:.1f} s",
    ]
    return ", ".join(parts)


class _Status:
    """A rich spinner on stderr naming the current step; plain lines instead with --verbose."""

    def __init__(self, verbose: bool) -> None:
        self._verbose = verbose
        self._console: Any = None
        # A spinner only on a terminal: elsewhere (a script, a cron job) rich and its import are not needed.
        if not verbose and (sys.stderr.isatty() or os.environ.get("FORCE_TERMINAL")):
            from rich.console import Console

            self._console = Console(stderr=True)
        self._live: Any = None
        self._log: Callable[[str], None] = lambda text: click.echo(f"harvest: {text}", err=True)

    def update(self, text: str) -> None:
        if self._verbose:
            self._log(text)
            return
        if self._console is None or not self._console.is_terminal:
            return
        if self._live is None:
            self._live = self._console.status(text)
            self._live.start()
        else:
            self._live.update(text)

    def step(self, label: str, text: str) -> None:
        self.update(f"{label}: {text}")

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def internal_error(exc: BaseException, *, where: str) -> None:
    """Report a bug: one line naming it, then the traceback, on stderr."""
    import traceback

    _error(f"internal error in harvest: {where}: {type(exc).__name__}: {exc} (please report this)")
    traceback.print_exception(exc, file=sys.stderr)
    sys.stderr.flush()


def _log(message: str) -> None:
    click.echo(f"harvest: {message}", err=True)


def _error(message: str) -> None:
    click.echo(f"harvest: error: {message}", err=True)
    sys.stderr.flush()
