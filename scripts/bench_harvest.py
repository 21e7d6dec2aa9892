"""Cold-harvest benchmark: the harvester (both backends) next to plain nodriver and plain playwright scripts.

Each run starts a fresh browser, clears the emulator's challenge (300 ms think time) and ends holding the
``cf_clearance`` cookie. Two clocks per run, both from before the browser starts: "ready" stops when the
record (or the cookie) is in hand, "total" when the browser is gone too (process group reaped, profile
deleted), which is what a `harvest` command makes a user wait for. Prints the median of N runs per variant and
its ratio to the target (0.9 s, on "total").

    .venv/bin/python scripts/bench_harvest.py [--runs 5] [--think-ms 300]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harvester import Harvester
from harvester._browser import find_browser
from tests.emulator import EmulatorConfig, EmulatorThread

TARGET = 0.9
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36"


Timing = tuple[float, float]  # (record ready, everything torn down), seconds from the start


async def harvester_run(backend: str, url: str) -> Timing:
    """One cold harvest through the Harvester, including its close."""
    started = time.perf_counter()
    async with Harvester(backend) as harvester:
        record = await harvester.harvest("cloudflare", base_url=url)
        ready = time.perf_counter() - started
    total = time.perf_counter() - started
    assert record.cookie_dict().get("cf_clearance")
    return ready, total


async def plain_nodriver_run(url: str, major: int) -> Timing:
    """What a user would write with nodriver alone: start, get, poll the cookie jar, stop and clean up."""
    import nodriver

    started = time.perf_counter()
    browser = await nodriver.start(
        headless=True,
        browser_executable_path=find_browser(),
        sandbox=os.geteuid() != 0,
        browser_args=[f"--user-agent={UA.format(major=major)}", "--disable-blink-features=AutomationControlled"],
    )
    try:
        await browser.get(url + "/")
        while True:
            cookies = await browser.cookies.get_all()
            if any(c.name == "cf_clearance" for c in cookies):
                break
            await asyncio.sleep(0.05)
        ready = time.perf_counter() - started
    finally:
        process = browser._process
        browser.stop()
        if process is not None:
            await process.wait()
        shutil.rmtree(browser.config.user_data_dir, ignore_errors=True)
    return ready, time.perf_counter() - started


async def plain_playwright_run(url: str, major: int) -> Timing:
    """What a user would write with playwright alone: launch the same Chromium, goto, poll the cookies, close."""
    from playwright.async_api import async_playwright

    started = time.perf_counter()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=find_browser(),
            headless=True,
            args=["--disable-blink-features=AutomationControlled"],
            ignore_default_args=["--enable-automation"],
        )
        try:
            context = await browser.new_context(user_agent=UA.format(major=major))
            page = await context.new_page()
            await page.goto(url + "/", wait_until="commit")
            while not any(c["name"] == "cf_clearance" for c in await context.cookies()):  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            ready = time.perf_counter() - started
        finally:
            await browser.close()
    return ready, time.perf_counter() - started


async def measure(runs: int, fn: Callable[[], Awaitable[Timing]]) -> list[Timing]:
    """Run ``fn`` ``runs`` times after one warm-up (disk cache), sequentially."""
    await fn()
    return [await fn() for _ in range(runs)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--think-ms", type=float, default=300.0)
    args = parser.parse_args()
    with EmulatorThread(EmulatorConfig(think_ms=args.think_ms)) as emu:
        async with Harvester() as probe:
            _, _, identity = await probe._ensure_browser(lambda _: None)
            major = identity.major
        variants: dict[str, Callable[[], Awaitable[Timing]]] = {
            "harvester (nodriver)": lambda: harvester_run("nodriver", emu.url),
            "harvester (playwright)": lambda: harvester_run("playwright", emu.url),
            "plain nodriver script": lambda: plain_nodriver_run(emu.url, major),
            "plain playwright script": lambda: plain_playwright_run(emu.url, major),
        }
        results = {name: await measure(args.runs, fn) for name, fn in variants.items()}
    baseline = statistics.median(total for _, total in results["plain nodriver script"])
    print(f"cold harvest, think_ms={args.think_ms:g}, {args.runs} runs each (median; target <= {TARGET} s on total)")
    print(f"{'variant':<26}{'ready s':>9}{'total s':>9}{'min s':>8}{'max s':>8}{'vs target':>11}{'vs plain nd':>13}")
    for name, timings in results.items():
        totals = [total for _, total in timings]
        ready = statistics.median(r for r, _ in timings)
        median = statistics.median(totals)
        print(
            f"{name:<26}{ready:>9.3f}{median:>9.3f}{min(totals):>8.3f}{max(totals):>8.3f}"
            f"{median / TARGET:>10.2f}x{median / baseline:>12.2f}x"
        )


if __name__ == "__main__":
    # The plain scripts leave Chromium's singleton directories (org.chromium.Chromium.*) in $TMPDIR, as they
    # would for a user; give every browser of this run a scratch TMPDIR (short: the socket path must fit) and
    # remove it afterwards.
    scratch = tempfile.mkdtemp(prefix="hb-", dir="/tmp" if os.path.isdir("/tmp") else None)
    os.environ["TMPDIR"] = scratch
    tempfile.tempdir = None
    try:
        asyncio.run(main())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
