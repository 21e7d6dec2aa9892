"""Several daemons sharing one cache on Redis (in one process here, as nodes would): one refresh per cycle."""

from __future__ import annotations

import asyncio
from types import MappingProxyType

from cache import AuthCache, generate_key
from harvester.daemon import Daemon, DaemonSettings, ProviderSpec, SchedulePolicy

from ._fakes import FakeHarvester


def _settings(min_margin: float) -> DaemonSettings:
    policy = SchedulePolicy(min_margin=min_margin, backoff_base=0.2, backoff_cap=1.0, jitter_ratio=0.0)
    providers = {"alpha": ProviderSpec("alpha", base_url="http://127.0.0.1:9")}
    return DaemonSettings(policy=policy, browser_idle_close=60.0, providers=MappingProxyType(providers))


async def test_two_daemons_on_one_redis_refresh_once_per_cycle(redis_location: str) -> None:
    """Two daemons whose schedules differ by 0.5 s: the later one reschedules from the earlier one's record.

    Over 7 s of 3 s records, the first daemon refreshes each cycle and the second runs no browser after the
    start (on the old code it harvested again every cycle, half a second after the first).
    """
    key = generate_key()
    first, second = FakeHarvester(ttl=3.0, delay=0.05), FakeHarvester(ttl=3.0, delay=0.05)
    daemons = [
        Daemon(_settings(1.0), cache=AuthCache.open(redis_location, key=key), harvester_factory=lambda s: first),
        Daemon(_settings(0.5), cache=AuthCache.open(redis_location, key=key), harvester_factory=lambda s: second),
    ]
    tasks = [asyncio.get_running_loop().create_task(d.serve()) for d in daemons]
    await asyncio.sleep(7.0)
    for daemon in daemons:
        daemon.request_exit()
    assert [await asyncio.wait_for(t, 15) for t in tasks] == [0, 0]
    runs = len(first.calls) + len(second.calls)
    assert len(second.calls) <= 1, (first.calls, second.calls)
    assert 3 <= runs <= 4, (len(first.calls), len(second.calls))
    record = AuthCache.open(redis_location, key=key).get("alpha")
    assert record is not None and not record.is_expired
