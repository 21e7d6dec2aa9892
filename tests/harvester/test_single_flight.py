"""SingleFlight: the one lock table for single flight, the providers' Refresher, over a fake harvester."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cache import AuthCache, SessionRecord, utcnow
from harvester import BlockedError, SingleFlight, harvest

_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class _Recipe:
    name: str


class _Harvester:
    """A harvester without a browser (the seam SingleFlight is written against): counts runs, can fail or wait."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fail = fail
        self.runs = 0
        self.gate: asyncio.Event | None = None
        self.timeout = 5.0
        self.headful = False
        self.browser_running = False
        self.browser_restarts = 0
        self.closed = 0

    def resolve(
        self, provider: str | None, *, url: str | None = None, name: str | None = None, base_url: str | None = None
    ) -> Any:
        return _Recipe(name or provider or "")

    async def harvest(self, provider: str | None, *, recipe: Any = None, **_: Any) -> SessionRecord:
        self.runs += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise BlockedError("the site kept answering HTTP 503", provider=recipe.name, status=503)
        return _record(recipe.name, "fresh")

    async def close_browser(self) -> None:
        return None

    async def close(self) -> None:
        self.closed += 1


def _record(name: str, agent: str, *, age: float = 0.0, ttl: float = 3600.0) -> SessionRecord:
    at = utcnow() - timedelta(seconds=age)
    return SessionRecord(provider=name, user_agent=agent, harvested_at=at, expires_at=at + timedelta(seconds=ttl))


async def test_refresh_harvests_and_stores_a_record_newer_than_the_stale_one() -> None:
    """With only the stale record cached, refresh runs the harvester once and stores its record."""
    cache = AuthCache.open()
    stale = _record("alpha", "stale", age=60)
    cache.put(stale)
    fake = _Harvester()
    record = await SingleFlight(cache, harvester=fake).refresh("alpha", stale=stale)
    assert fake.runs == 1 and record.user_agent == "fresh"
    stored = cache.get("alpha")
    assert stored is not None and stored.user_agent == "fresh"


async def test_refresh_returns_a_newer_record_another_caller_stored_without_a_browser_run() -> None:
    """A record newer than ``stale`` already in the cache is returned as is."""
    cache = AuthCache.open()
    stale = _record("alpha", "stale", age=60)
    cache.put(_record("alpha", "other", age=1))
    fake = _Harvester()
    record = await SingleFlight(cache, harvester=fake).refresh("alpha", stale=stale)
    assert fake.runs == 0 and record.user_agent == "other"


async def test_refresh_without_a_stale_record_takes_any_unexpired_one() -> None:
    """``stale=None`` (the caller had nothing) accepts any unexpired cached record, but not an expired one."""
    cache = AuthCache.open()
    cache.put(_record("alpha", "cached", age=10))
    cache.put(_record("beta", "expired", age=100, ttl=50))
    fake = _Harvester()
    flight = SingleFlight(cache, harvester=fake)
    assert (await flight.refresh("alpha", stale=None)).user_agent == "cached"
    assert (await flight.refresh("beta", stale=None)).user_agent == "fresh"
    assert fake.runs == 1


async def test_failed_refresh_keeps_the_stale_record() -> None:
    """A refresh whose harvest fails raises, and the stale record is still in the cache, unchanged."""
    cache = AuthCache.open()
    stale = _record("alpha", "stale", age=60)
    cache.put(stale)
    with pytest.raises(BlockedError):
        await SingleFlight(cache, harvester=_Harvester(fail=True)).refresh("alpha", stale=stale)
    kept = cache.get("alpha")
    assert kept is not None and kept.user_agent == "stale" and kept.harvested_at == stale.harvested_at


async def test_concurrent_refreshes_make_one_harvest() -> None:
    """Ten concurrent refreshes of one name through one SingleFlight make one harvester run and share its record."""
    cache = AuthCache.open()
    fake = _Harvester()
    fake.gate = asyncio.Event()
    flight = SingleFlight(cache, harvester=fake)
    tasks = [asyncio.create_task(flight.refresh("alpha", stale=None)) for _ in range(10)]
    while fake.runs == 0:  # noqa: ASYNC110 (the first refresh reaches the harvester after a thread takes the lock)
        await asyncio.sleep(0.01)
    fake.gate.set()
    records = await asyncio.gather(*tasks)
    assert fake.runs == 1
    assert len({r.harvested_at for r in records}) == 1


async def test_two_single_flights_in_one_process_make_one_harvest() -> None:
    """Two SingleFlight objects (two clients of one cache) are still serialised by the cross-process lock."""
    fake_a, fake_b = _Harvester(), _Harvester()
    fake_a.gate = asyncio.Event()
    first = asyncio.create_task(SingleFlight(AuthCache.open(), harvester=fake_a).refresh("alpha", stale=None))
    while fake_a.runs == 0:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    second = asyncio.create_task(SingleFlight(AuthCache.open(), harvester=fake_b).refresh("alpha", stale=None))
    await asyncio.sleep(0.2)  # the second is now waiting for the lock the first holds
    fake_a.gate.set()
    one, two = await asyncio.gather(first, second)
    assert (fake_a.runs, fake_b.runs) == (1, 0)
    assert one.harvested_at == two.harvested_at


_OTHER_PROCESS = """
import sys
from datetime import timedelta
from cache import AuthCache, SessionRecord, utcnow

cache = AuthCache.open()
with cache.harvest_lock("alpha"):
    print("locked", flush=True)
    sys.stdin.readline()
    now = utcnow()
    cache.put(SessionRecord(provider="alpha", user_agent="other-process", harvested_at=now,
                            expires_at=now + timedelta(hours=1)))
"""


@pytest.fixture
def other_process() -> Iterator[subprocess.Popen[str]]:
    """Another process holding alpha's harvest lock (it has said "locked"); reaped at teardown."""
    with subprocess.Popen(
        [sys.executable, "-c", _OTHER_PROCESS], cwd=_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


async def test_refresh_waits_for_another_process_and_takes_its_record(other_process: subprocess.Popen[str]) -> None:
    """While another process holds the name's harvest lock, refresh waits and then returns what it stored."""
    assert other_process.stdin is not None
    stale = _record("alpha", "stale", age=60)
    cache = AuthCache.open()
    cache.put(stale)
    fake = _Harvester()
    task = asyncio.create_task(SingleFlight(cache, harvester=fake).refresh("alpha", stale=stale))
    await asyncio.sleep(0.2)
    assert not task.done()
    other_process.stdin.write("go\n")
    other_process.stdin.flush()
    record = await asyncio.wait_for(task, 20)
    assert fake.runs == 0 and record.user_agent == "other-process"


async def test_harvest_function_reuses_only_records_stored_since_it_began() -> None:
    """``harvest()`` harvests even over a fresh record stored before the call (it was asked for a new one), and
    ``force`` always harvests."""
    cache = AuthCache.open()
    cache.put(_record("alpha", "older", age=5))
    fake = _Harvester()
    record = await harvest("alpha", cache=cache, harvester=fake)
    assert fake.runs == 1 and record.user_agent == "fresh"
    await harvest("alpha", cache=cache, harvester=fake, force=True)
    assert fake.runs == 2 and fake.closed == 0  # a harvester passed in stays open


async def test_aclose_closes_only_a_harvester_it_made() -> None:
    """aclose() leaves a harvester that was passed in open."""
    fake = _Harvester()
    flight = SingleFlight(AuthCache.open(), harvester=fake)
    await flight.aclose()
    assert fake.closed == 0
