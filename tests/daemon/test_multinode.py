"""Several daemons sharing one cache on Redis (in one process here, as nodes would): one refresh per cycle."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

from cache import AuthCache, generate_key
from harvester.daemon import Daemon, DaemonSettings, ProviderSpec, SchedulePolicy

from ._fakes import FakeHarvester

HARVEST = str(Path(sys.executable).with_name("harvest"))


def _settings(min_margin: float) -> DaemonSettings:
    policy = SchedulePolicy(min_margin=min_margin, backoff_base=0.2, backoff_cap=1.0, jitter_ratio=0.0)
    providers = {"alpha": ProviderSpec("alpha", base_url="http://127.0.0.1:9")}
    return DaemonSettings(policy=policy, browser_idle_close=60.0, providers=MappingProxyType(providers))


async def test_two_daemons_on_one_redis_refresh_once_per_cycle(redis_location: str) -> None:
    """Two daemons whose schedules differ by 0.5 s: the later one reschedules from the earlier one's record.

    Over 7 s of 3 s records there is one harvest per cycle: no harvest starts sooner than 2 s (the record's TTL
    less the larger margin) after the one before (on the old code the second daemon harvested again every cycle,
    half a second after the first). Which daemon runs it is not asserted: on a busy host the first one's run can
    start more than 0.5 s late, and then the second one rightly refreshes that cycle (the first then reuses its
    record). Both publish heartbeats that `harvest status` and the report show, with the node that refreshed
    the record.
    """
    key = generate_key()
    first, second = FakeHarvester(ttl=3.0, delay=0.05), FakeHarvester(ttl=3.0, delay=0.05)
    daemons = [
        Daemon(_settings(1.0), cache=AuthCache.open(redis_location, key=key), harvester_factory=lambda s: first),
        Daemon(_settings(0.5), cache=AuthCache.open(redis_location, key=key), harvester_factory=lambda s: second),
    ]
    tasks = [asyncio.get_running_loop().create_task(d.serve()) for d in daemons]
    await asyncio.sleep(7.0)
    runs = len(first.calls) + len(second.calls)  # over the 7 s (the checks below take a while on a busy host)
    report = await daemons[0].report()
    assert len(report["daemons"]) == 2 and {b["pid"] for b in report["daemons"]} == {os.getpid()}
    assert report["providers"][0]["refreshed_by"] == f"{socket.gethostname()}:{os.getpid()}"
    env = os.environ | {"HARVEST_CACHE": redis_location, "HARVEST_CACHE_KEY": key}
    status = await asyncio.to_thread(
        subprocess.run, [HARVEST, "status", "--json"], capture_output=True, text=True, timeout=60, env=env
    )
    assert status.returncode == 0, status.stderr
    assert len(json.loads(status.stdout)["daemons"]) == 2
    for daemon in daemons:
        daemon.request_exit()
    assert [await asyncio.wait_for(t, 15) for t in tasks] == [0, 0]
    starts = sorted(first.started + second.started)
    gaps = [round(b - a, 2) for a, b in itertools.pairwise(starts)]
    assert all(gap > 1.5 for gap in gaps), gaps  # a second harvest in one cycle would be ~0.5 s after the first
    assert 3 <= runs <= 4, (runs, gaps)
    record = AuthCache.open(redis_location, key=key).get("alpha")
    assert record is not None and not record.is_expired
    assert await daemons[0].heartbeats() == []  # a clean stop takes the heartbeat away
