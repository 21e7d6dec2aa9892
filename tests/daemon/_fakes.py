"""A fake harvester for the daemon's in-process tests: no browser, programmable delays and failures."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cache import Cookie, SessionRecord, utcnow
from harvester._exceptions import BlockedError, BrowserError
from harvester.daemon import KeyValueFormatter, SecretRegistry

COOKIE_SECRET = "cfclear-SECRET-cookie-value-0001"
API_KEY_SECRET = "apikey-SECRET-0123456789abcdef"
AUTH_HEADER_SECRET = "authhdr-SECRET-9999"


@dataclass(frozen=True)
class FakeRecipe:
    """The part of a ``Recipe`` that ``harvester.harvest()`` and the fake read."""

    name: str
    base_url: str | None = None


class FakeHarvester:
    """Stands in for ``harvester.Harvester``: records calls, sleeps ``delay``, fails on demand.

    It has the real one's ``resolve`` and ``harvest`` signatures, so ``harvester.harvest()`` (the single-flight
    entry point the daemon goes through) can drive it.
    """

    def __init__(self, *, delay: float = 0.05, ttl: float = 2.0, fail_next: int = 0) -> None:
        self.delay = delay
        self.ttl = ttl
        self.fail_next = fail_next
        self.crash_next = 0
        self.hang_next = 0
        self.bug_next = 0  # harvests that fail with a KeyError (a bug in our code, not a browser failure)
        self.gate: asyncio.Event | None = None  # when set, each harvest also waits for it (after ``delay``)
        self.calls: list[str] = []
        self.started: list[float] = []  # time.monotonic() at each call
        self.timeouts: list[float | None] = []  # the timeout each call was given
        self.cancelled: list[str] = []
        self.headful = False
        self.timeout = 30.0  # read by harvester.harvest() when it is given no timeout: how long its lock waits
        self.browser_running = False
        self.browser_restarts = 0
        self.closes = 0
        self.entered = False
        self.exited = False
        self.concurrent = 0
        self.max_seen_concurrent = 0

    async def __aenter__(self) -> FakeHarvester:
        self.entered = True
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.exited = True
        self.browser_running = False

    def resolve(
        self, provider: str | None, *, url: str | None = None, name: str | None = None, base_url: str | None = None
    ) -> FakeRecipe:
        return FakeRecipe(name=name or provider or url or "", base_url=base_url)

    async def harvest(
        self,
        provider: str | None,
        *,
        url: str | None = None,
        name: str | None = None,
        base_url: str | None = None,
        proxy: str | None = None,
        timeout: float | None = None,
        on_step: Callable[[str], None] | None = None,
        recipe: FakeRecipe | None = None,
        on_page: Any = None,
    ) -> SessionRecord:
        if recipe is None:
            recipe = self.resolve(provider, url=url, name=name, base_url=base_url)
        name, base_url = recipe.name, recipe.base_url
        self.calls.append(name)
        self.started.append(time.monotonic())
        self.timeouts.append(timeout)
        self.browser_running = True
        self.concurrent += 1
        self.max_seen_concurrent = max(self.max_seen_concurrent, self.concurrent)
        try:
            await asyncio.sleep(self.delay)
            if self.gate is not None:
                await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled.append(name)
            raise
        finally:
            self.concurrent -= 1
        if self.crash_next > 0:
            self.crash_next -= 1
            self.browser_running = False
            self.browser_restarts += 1
            raise BrowserError(f"the browser died (Cookie: cf_clearance={COOKIE_SECRET})", provider=name)
        if self.hang_next > 0:
            self.hang_next -= 1
            raise BrowserError("Chromium stopped answering over CDP", provider=name)
        if self.bug_next > 0:
            self.bug_next -= 1
            raise KeyError("demoApiKey")
        if self.fail_next > 0:
            self.fail_next -= 1
            raise BlockedError(
                f"{name}: HTTP 503 with Authorization: Bearer {API_KEY_SECRET}", provider=name, status=503
            )
        now = utcnow()
        return SessionRecord(
            provider=name,
            cookies=[Cookie("cf_clearance", COOKIE_SECRET, ".example.test")],
            user_agent="Mozilla/5.0 Fake",
            headers={"authorization": AUTH_HEADER_SECRET},
            api_key=API_KEY_SECRET,
            origin=base_url,
            harvested_at=now,
            expires_at=now + timedelta(seconds=self.ttl),
        )

    async def close_browser(self) -> None:
        self.closes += 1
        self.browser_running = False


@contextmanager
def captured_log(secrets: SecretRegistry) -> Iterator[io.StringIO]:
    """Capture every log line as the daemon formats it (redaction included)."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(KeyValueFormatter(secrets))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield buffer
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
