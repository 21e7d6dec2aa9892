"""``harvest --provider NAME`` (and ``--all``, ``--url``): harvest once into the cache and exit.

The root click group (``main`` in ``harvester/cli/_app.py``) forwards its options to :func:`run`; this module
only turns them into harvests, shows progress on stderr, and maps outcomes to exit codes: with several
targets, the worst (highest) code of them all.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from cache import AuthCache, CacheError, SessionRecord, normalize_name, utcnow
from cache._export import expires_in
from harvester.cli import _exit

from .._config import Config, load_config
from .._exceptions import (
    BlockedError,
    BrowserError,
    ChallengeTimeout,
    ConfigError,
    HarvestError,
    NeedsHeadfulError,
    ProxyAuthError,
    UnknownProviderError,
)
from .._recipes import RECIPES, known_providers

# Most specific first; anything else from the harvester is a browser failure.
_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (UnknownProviderError, _exit.USAGE),
    (ConfigError, _exit.USAGE),
    # Wrong or missing proxy credentials: like a bad flag, retrying the same command cannot help.
    (ProxyAuthError, _exit.USAGE),
    (ChallengeTimeout, _exit.CHALLENGE_TIMEOUT),
    (BlockedError, _exit.BLOCKED),
    (NeedsHeadfulError, _exit.NEEDS_HEADFUL),
    (BrowserError, _exit.BROWSER_FAILED),
    (CacheError, _exit.CACHE_ERROR),
    (HarvestError, _exit.BROWSER_FAILED),
)


def exit_code_for(error: BaseException) -> int:
    """The exit code for an error from a harvest."""
    for kind, code in _EXIT_CODES:
        if isinstance(error, kind):
            return code
    return _exit.BROWSER_FAILED


def run(**options: Any) -> int:
    """Harvest the providers the options name into the cache; return the exit code.

    Options are the root group's: providers, all_providers, url, name, backend, headful, proxy, timeout,
    base_url, cache_path, verbose.
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
    timeout: float | None = options.get("timeout")  # None: 30 s, or 300 s with --headful
    if timeout is not None and timeout <= 0:
        _error("--timeout must be positive")
        return _exit.USAGE
    try:
        config = load_config()
    except ConfigError as exc:
        _error(str(exc))
        return _exit.USAGE
    try:
        cache = AuthCache.open(path=options.get("cache_path"))
    except CacheError as exc:
        _error(str(exc))
        return _exit.CACHE_ERROR
    targets: list[tuple[str | None, str | None]] = [(p, None) for p in providers]
    if url:
        targets.append((None, url))
    return asyncio.run(_main(targets, options, config, cache, timeout))


async def _main(
    targets: list[tuple[str | None, str | None]],
    options: dict[str, Any],
    config: Config,
    cache: AuthCache,
    timeout: float | None,
) -> int:
    loop = asyncio.get_running_loop()
    work = asyncio.ensure_future(_harvest_all(targets, options, config, cache, timeout))
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
    cache: AuthCache,
    timeout: float | None,
) -> int:
    from .._harvest import Harvester
    from .._single_flight import harvest

    verbose = bool(options.get("verbose"))
    status = _Status(verbose)
    worst = _exit.OK
    # One browser for every provider of this run.
    async with Harvester(
        options.get("backend"), timeout=timeout, headful=bool(options.get("headful")), config=config
    ) as harvester:
        for provider, url in targets:
            label = provider or options.get("name") or url or "?"
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
                    on_step=functools.partial(status.step, label),
                )
            except (HarvestError, CacheError, ValueError) as exc:
                status.stop()
                code = _exit.USAGE if isinstance(exc, ValueError) else exit_code_for(exc)
                _error(f"{label}: {exc}")
                worst = max(worst, code)  # a later, worse failure is not hidden behind an earlier one
                continue
            finally:
                status.stop()
            click.echo(summary_line(record, elapsed=time.monotonic() - started, now=utcnow()))
    return worst


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
        from rich.console import Console

        self._verbose = verbose
        self._console = Console(stderr=True)
        self._live: Any = None
        self._log: Callable[[str], None] = lambda text: click.echo(f"harvest: {text}", err=True)

    def update(self, text: str) -> None:
        if self._verbose:
            self._log(text)
            return
        if not self._console.is_terminal:
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


def _error(message: str) -> None:
    click.echo(f"harvest: error: {message}", err=True)
    sys.stderr.flush()
