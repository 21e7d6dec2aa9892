"""playwright's Node driver is started once per event loop and shared by the harvesters on it; it stops when idle,
when the loop ends, and a dead one is replaced."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cache import AuthCache
from harvester import Harvester, _playwright, harvest

ROOT = Path(__file__).resolve().parents[2]


def node_drivers() -> set[int]:
    """Our child processes running playwright's driver (``node ... run-driver``)."""
    me = str(os.getpid())
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
        except OSError:
            continue
        if stat[stat.rfind(")") + 2 :].split()[1] == me and b"run-driver" in cmdline:
            found.add(int(entry.name))
    return found


async def gone(pids: set[int], timeout: float = 10.0) -> bool:
    """Wait until none of ``pids`` runs (the driver exits on its own once stopped); True if so."""
    async with asyncio.timeout(timeout):
        while pids & node_drivers():  # noqa: ASYNC110 (another process: no event to await)
            await asyncio.sleep(0.05)
    return True


async def test_harvesters_one_after_another_share_one_node_driver(emulator: Any) -> None:
    """A second playwright harvester on the same loop reuses the first one's Node driver (started once)."""
    seen = []
    for _ in range(2):
        async with Harvester("playwright") as harvester:
            record = await harvest("cloudflare", base_url=emulator.url, harvester=harvester, cache=AuthCache.open())
            assert record.cookie_dict().get("cf_clearance")
            seen.append(node_drivers())
    assert len(seen[0]) == 1 and seen[0] == seen[1]


async def test_an_idle_node_driver_stops(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once its last harvester is closed, the driver stops after DRIVER_IDLE_STOP seconds."""
    monkeypatch.setattr(_playwright, "DRIVER_IDLE_STOP", 0.2)
    async with Harvester("playwright") as harvester:
        await harvest("cloudflare", base_url=emulator.url, harvester=harvester, cache=AuthCache.open())
        running = node_drivers()
    assert len(running) == 1
    assert await gone(running)


async def test_a_dead_node_driver_is_replaced(emulator: Any) -> None:
    """A driver killed while idle is not reused: the next harvest starts another one and succeeds."""
    async with Harvester("playwright") as harvester:
        await harvest("cloudflare", base_url=emulator.url, harvester=harvester, cache=AuthCache.open())
        killed = node_drivers()
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    assert await gone(killed)
    async with Harvester("playwright") as harvester:
        record = await harvest(
            "cloudflare", base_url=emulator.url, harvester=harvester, cache=AuthCache.open(), force=True
        )
        assert record.cookie_dict().get("cf_clearance")
        assert node_drivers() and not node_drivers() & killed


def test_the_node_driver_stops_with_the_loop(emulator: Any) -> None:
    """A program whose asyncio.run ends while the driver idles leaves no Node process and logs nothing."""
    code = (
        "import asyncio, sys\n"
        "from cache import AuthCache\n"
        "from harvester import Harvester, harvest\n"
        "from tests.harvester.test_playwright_driver import node_drivers\n"
        "async def main():\n"
        "    async with Harvester('playwright') as h:\n"
        f"        await harvest('cloudflare', base_url={emulator.url!r}, harvester=h, cache=AuthCache.open())\n"
        "    return node_drivers()\n"
        "running = asyncio.run(main())\n"
        "print(len(running), len(running & node_drivers()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "0"]  # running during the program, gone when asyncio.run returned
    assert out.stderr == ""
