"""playwright's Node driver outlives the browser it drove: a harvester keeps it across browser relaunches, replaces
one that died, and stops it when the harvester closes."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

from cache import AuthCache
from harvester import Harvester, harvest
from harvester._reaper import our_children


def node_drivers() -> set[int]:
    """Our child processes running playwright's driver (``node ... run-driver``)."""
    found = set()
    for pid, state, _group, _comm in our_children():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        # (a zombie has no command line: an exited driver is not running)
        if state != "Z" and b"run-driver" in cmdline:
            found.add(pid)
    return found


async def gone(pids: set[int], timeout: float = 10.0) -> None:
    """Wait until none of ``pids`` runs any more."""
    async with asyncio.timeout(timeout):
        while pids & node_drivers():  # noqa: ASYNC110 (another process: no event to await)
            await asyncio.sleep(0.05)


async def _harvest(harvester: Harvester, url: str) -> None:
    record = await harvest("cloudflare", base_url=url, harvester=harvester, cache=AuthCache.open(), force=True)
    assert record.cookie_dict().get("cf_clearance")


async def test_a_relaunched_browser_reuses_the_node_driver_which_stops_with_the_harvester(emulator: Any) -> None:
    """After the browser is closed (as the daemon closes an idle one) the next harvest relaunches Chromium but not
    Node; closing the harvester stops the driver."""
    async with Harvester("playwright") as harvester:
        await _harvest(harvester, emulator.url)
        first = node_drivers()
        await harvester.close_browser()
        assert node_drivers() == first  # kept while no browser runs
        await _harvest(harvester, emulator.url)
        assert harvester.browser_launches == 2 and node_drivers() == first and len(first) == 1
    await gone(first)


async def test_a_node_driver_that_died_is_replaced_at_the_next_launch(emulator: Any) -> None:
    """A kept driver killed while no browser runs is not reused: the next launch starts another and harvests."""
    async with Harvester("playwright") as harvester:
        await _harvest(harvester, emulator.url)
        await harvester.close_browser()
        killed = node_drivers()
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        await gone(killed)
        await _harvest(harvester, emulator.url)
        replacement = node_drivers()
        assert replacement and not replacement & killed
    await gone(replacement)


async def test_a_dead_browser_is_replaced_under_the_same_node_driver(emulator: Any) -> None:
    """When Chromium dies, its replacement is driven through the Node driver that was already running."""
    async with Harvester("playwright") as harvester:
        await _harvest(harvester, emulator.url)
        first = node_drivers()
        process = harvester._browser.process
        assert process is not None and process.pid is not None
        os.killpg(process.pid, signal.SIGKILL)
        async with asyncio.timeout(10):
            while process.alive:  # noqa: ASYNC110 (the browser's exit has no event of ours to await)
                await asyncio.sleep(0.05)
        await _harvest(harvester, emulator.url)
        assert harvester.browser_restarts == 1 and node_drivers() == first
