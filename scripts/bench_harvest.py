"""Harvest benchmark: the four measures of issue 13, both backends, next to plain nodriver, playwright and
zendriver scripts in the same run, with ratios and a per-phase breakdown.

Every run clears the emulator's challenge (300 ms think time) and ends holding the ``cf_clearance`` cookie.
The rows (median of N runs after one warm-up each):

1. CLI wall, ``harvest --all`` (4 providers) next to ``harvest --provider cerebras``: the ratio (goal <= 1.3x);
2. warm harvest, browser reused (the daemon, ``harvest --all`` after the first): goal <= 0.45 s; as the daemon
   runs it (a spare tab open before each harvest), and back to back (each harvest opens its own tab);
3. cold harvest in process (``harvester.harvest``, its own browser, closed after): goal <= 0.85 s (nodriver),
   <= 1.0 s (playwright); "ready" stops with the record in hand, "total" once the browser is gone too;
4. CLI wall, ``harvest --provider cerebras``: goal <= 1.0 s.

The rows come twice: with Chromium (the default browser) and with Chromium's headless shell
(``chromium-headless-shell``, which a user names in ``[browser] path``), when it is installed.

    .venv/bin/python scripts/bench_harvest.py [--runs 5] [--think-ms 300] [--browsers chromium,shell]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# The plain nodriver script gets nodriver as a user's script would: imported in full, before the harvester's
# driver could import it with its CDP modules loaded lazily (harvester._nodriver.import_nodriver).
import nodriver  # noqa: E402

from cache import AuthCache, generate_key  # noqa: E402
from harvester import Harvester, harvest  # noqa: E402
from harvester._browser import find_browser  # noqa: E402
from harvester._launch import find_headless_shell  # noqa: E402
from harvester._phases import PHASES, Timeline  # noqa: E402
from tests.emulator import EmulatorConfig, EmulatorThread  # noqa: E402

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{major}.0.0.0 Safari/537.36"
BACKENDS = ("nodriver", "playwright")
SHELL = find_headless_shell()
HARVEST = str(ROOT / ".venv" / "bin" / "harvest")

Timing = tuple[float, float]  # (record ready, everything torn down), seconds from the start
PHASE_LOG: dict[str, list[dict[str, float]]] = {}  # variant -> per-run phase durations
CPU_LOG: dict[str, list[float]] = {}  # CLI variant -> CPU seconds per run (harvest and every Chromium process)


async def cold_run(backend: str, url: str, cache: AuthCache, variant: str) -> Timing:
    """One cold harvest through ``harvester.harvest()`` with its own browser (launched and closed)."""
    timeline = Timeline()
    started = time.perf_counter()
    harvester = Harvester(backend)
    try:
        record = await harvest("cloudflare", base_url=url, cache=cache, harvester=harvester, on_step=timeline.step)
        timeline.end("teardown")
        ready = time.perf_counter() - started
    finally:
        await harvester.close()
    timeline.end()
    PHASE_LOG.setdefault(variant, []).append(dict(timeline.durations))
    assert record.cookie_dict().get("cf_clearance")
    return ready, time.perf_counter() - started


def warm_runner(
    backend: str, url: str, cache: AuthCache, *, spare: bool, variant: str
) -> tuple[Callable[[], Awaitable[Timing]], Harvester]:
    """Harvests through one long-lived harvester (its browser launched by the warm-up run).

    ``spare``: as the daemon runs it, with a spare tab, and each harvest starts once that tab is open (the
    daemon's refreshes are minutes apart); else back to back, each opening its own tab.
    """
    harvester = Harvester(backend, spare_tabs=1 if spare else 0)

    async def run() -> Timing:
        for opening in list(harvester._browser._spares):
            await opening  # idle until the spare tab is open, as between the daemon's refreshes
        timeline = Timeline()
        started = time.perf_counter()
        record = await harvest("cloudflare", base_url=url, cache=cache, harvester=harvester, on_step=timeline.step)
        timeline.end()
        PHASE_LOG.setdefault(variant, []).append(dict(timeline.durations))
        assert record.cookie_dict().get("cf_clearance")
        elapsed = time.perf_counter() - started
        return elapsed, elapsed

    return run, harvester


def cli_runner(env: dict[str, str], name: str, *args: str) -> Callable[[], Awaitable[Timing]]:
    """The wall time of one `harvest ARGS` process, as a user waits for it (and its CPU time, in ``CPU_LOG``)."""

    async def run() -> Timing:
        # The command reaps its Chromium's helpers (it is their subreaper), so once we have reaped the command
        # our children's CPU time holds every process of the run; nothing else of ours runs meanwhile.
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            HARVEST, *args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        _, err = await proc.communicate()
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"harvest {' '.join(args)} exited {proc.returncode}: {err.decode()[-500:]}")
        cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        CPU_LOG.setdefault(name, []).append(cpu)
        return elapsed, elapsed

    return run


async def plain_nodriver_run(url: str, major: int) -> Timing:
    """What a user would write with nodriver alone: start, get, poll the cookie jar, stop and clean up."""
    started = time.perf_counter()
    browser = await nodriver.start(
        headless=True,
        browser_executable_path=find_browser(),
        sandbox=os.geteuid() != 0,
        browser_args=[f"--user-agent={UA.format(major=major)}", "--disable-blink-features=AutomationControlled"],
    )
    try:
        await browser.get(url + "/")
        while not any(c.name == "cf_clearance" for c in await browser.cookies.get_all()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        ready = time.perf_counter() - started
    finally:
        process = browser._process
        browser.stop()
        if process is not None:
            await process.wait()
        shutil.rmtree(browser.config.user_data_dir, ignore_errors=True)
    return ready, time.perf_counter() - started


def _quiet_zendriver_listener(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Drop zendriver's own teardown noise: ``browser.stop()`` closes the websocket under its listener task,
    which then dies with "no websocket connection" that nothing retrieves. Anything else is reported as usual."""
    future = context.get("future")
    coro = getattr(future, "get_coro", lambda: None)()
    if isinstance(context.get("exception"), ValueError) and "listener_loop" in getattr(coro, "__qualname__", ""):
        return
    loop.default_exception_handler(context)


async def plain_zendriver_run(url: str, major: int) -> Timing:
    """The same script with zendriver (nodriver's maintained fork)."""
    import zendriver

    asyncio.get_running_loop().set_exception_handler(_quiet_zendriver_listener)
    started = time.perf_counter()
    browser = await zendriver.start(
        headless=True,
        browser_executable_path=find_browser(),
        sandbox=os.geteuid() != 0,
        browser_args=[f"--user-agent={UA.format(major=major)}", "--disable-blink-features=AutomationControlled"],
        browser_connection_max_tries=40,  # its default gives up after 2.5 s: too soon on a loaded machine
    )
    try:
        await browser.get(url + "/")
        while not any(c.name == "cf_clearance" for c in await browser.cookies.get_all()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        ready = time.perf_counter() - started
    finally:
        await browser.stop()
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


async def measure(runs: int, fn: Callable[[], Awaitable[Timing]], name: str) -> list[Timing]:
    """Run ``fn`` ``runs`` times after one warm-up (disk cache, a warm browser), one after another."""
    before = {variant: len(log) for variant, log in PHASE_LOG.items()}
    cpu_before = {variant: len(log) for variant, log in CPU_LOG.items()}
    await fn()
    # The warm-up's phases and CPU time do not count.
    for variant, log in PHASE_LOG.items():
        del log[before.get(variant, 0) :]
    for variant, cpu_log in CPU_LOG.items():
        del cpu_log[cpu_before.get(variant, 0) :]
    timings = [await fn() for _ in range(runs)]
    print(f"  measured {name}", file=sys.stderr, flush=True)
    return timings


@contextlib.contextmanager
def scratch_tmpdir() -> Iterator[None]:
    """A scratch $TMPDIR for the plain scripts, removed afterwards.

    They leave Chromium's singleton directories (org.chromium.Chromium.*) and their profiles in $TMPDIR, as
    they would for a user. Only they get it: harvest keeps its profile in /dev/shm unless $TMPDIR is set, and
    it removes what it makes. (Short: Chromium's socket path under it must fit.)
    """
    scratch = tempfile.mkdtemp(prefix="hb-", dir="/tmp" if os.path.isdir("/tmp") else None)
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = scratch
    tempfile.tempdir = None
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before
        tempfile.tempdir = None
        shutil.rmtree(scratch, ignore_errors=True)


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--think-ms", type=float, default=300.0)
    parser.add_argument(
        "--browsers",
        default="chromium,shell",
        help="comma-separated: chromium (the default browser), shell (chromium-headless-shell, if installed)",
    )
    args = parser.parse_args()
    browsers = [b for b in args.browsers.split(",") if b]
    if "shell" in browsers and SHELL is None:
        print("  chromium-headless-shell is not installed: its rows are left out", file=sys.stderr)
        browsers.remove("shell")
    home = Path(tempfile.mkdtemp(prefix="hbh-"))
    env = {
        **os.environ,
        "HARVEST_CACHE": str(home / "s.cache"),
        "HARVEST_CACHE_KEY": generate_key(),
        "HARVEST_CONFIG": str(home / "none.toml"),
    }
    os.environ.update({k: env[k] for k in ("HARVEST_CACHE", "HARVEST_CACHE_KEY", "HARVEST_CONFIG")})
    cache = AuthCache.open()
    results: dict[str, list[Timing]] = {}
    try:
        with EmulatorThread(EmulatorConfig(think_ms=args.think_ms)) as emu:
            async with Harvester() as probe:
                _, _, identity = await probe._ensure_browser(lambda _: None)
                major = identity.major
            for browser in browsers:
                # The headless shell is named as a user names it: $HARVEST_BROWSER (the CLI and the harvester read it).
                if browser == "shell":
                    os.environ["HARVEST_BROWSER"] = env["HARVEST_BROWSER"] = SHELL
                else:
                    os.environ.pop("HARVEST_BROWSER", None)
                    env.pop("HARVEST_BROWSER", None)
                suffix = "" if browser == "chromium" else " shell"
                for backend in BACKENDS:
                    cli = ["--base-url", emu.url, "--backend", backend]
                    for name, target in (
                        (f"cli --all {backend}{suffix}", ["--all"]),
                        (f"cli cerebras {backend}{suffix}", ["--provider", "cerebras"]),
                    ):
                        results[name] = await measure(args.runs, cli_runner(env, name, *target, *cli), name)
                    for spare in (True, False):
                        name = f"warm {backend}{suffix}" if spare else f"warm b2b {backend}{suffix}"
                        run, harvester = warm_runner(backend, emu.url, cache, spare=spare, variant=name)
                        try:
                            results[name] = await measure(args.runs, run, name)
                        finally:
                            await harvester.close()
                    name = f"cold {backend}{suffix}"
                    results[name] = await measure(
                        args.runs, lambda b=backend, n=name: cold_run(b, emu.url, cache, n), name
                    )
            os.environ.pop("HARVEST_BROWSER", None)
            baselines: dict[str, Callable[[], Awaitable[Timing]]] = {
                "plain nodriver script": lambda: plain_nodriver_run(emu.url, major),
                "plain zendriver script": lambda: plain_zendriver_run(emu.url, major),
                "plain playwright script": lambda: plain_playwright_run(emu.url, major),
            }
            with scratch_tmpdir():
                for name, fn in baselines.items():
                    try:
                        results[name] = await measure(args.runs, fn, name)
                    except Exception as exc:  # a baseline that cannot run here is reported, not fatal
                        first = str(exc).strip().splitlines()
                        print(f"  {name}: failed ({type(exc).__name__}: {first[-1] if first else ''})", file=sys.stderr)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    report(results, args)


def report(results: dict[str, list[Timing]], args: argparse.Namespace) -> None:
    """Print the four rows, the baselines and the per-phase medians."""

    def total(name: str) -> float:
        return _median([t for _, t in results.get(name, [])])

    def ready(name: str) -> float:
        return _median([r for r, _ in results.get(name, [])])

    def cpu(name: str) -> float:
        return _median(CPU_LOG.get(name, []))

    print(f"harvest benchmark, think_ms={args.think_ms:g}, {args.runs} runs each (medians, seconds)")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (over ~1 means noisy figures)")
    for suffix, title in (("", "Chromium (the default)"), (" shell", "chromium-headless-shell ([browser] path)")):
        if f"cold nodriver{suffix}" not in results:
            continue
        print(f"\n{title}")
        print(f"{'measure':<44}{'nodriver':>10}{'playwright':>12}{'goal':>10}")
        all_ratio = [total(f"cli --all {b}{suffix}") / total(f"cli cerebras {b}{suffix}") for b in BACKENDS]
        rows = [
            ("1. `harvest --all` / `--provider cerebras` (x)", all_ratio, "1.3x"),
            ("   `harvest --all`, CLI wall", [total(f"cli --all {b}{suffix}") for b in BACKENDS], ""),
            ("2. warm harvest, browser reused (spare tab)", [total(f"warm {b}{suffix}") for b in BACKENDS], "0.45"),
            ("   warm, back to back (opens its tab)", [total(f"warm b2b {b}{suffix}") for b in BACKENDS], ""),
            ("3. cold harvest in process, ready", [ready(f"cold {b}{suffix}") for b in BACKENDS], ""),
            ("   cold harvest in process, total", [total(f"cold {b}{suffix}") for b in BACKENDS], "0.85/1.0"),
            (
                "4. `harvest --provider cerebras`, CLI wall",
                [total(f"cli cerebras {b}{suffix}") for b in BACKENDS],
                "1.0",
            ),
            ("   CPU per `harvest --all` (with Chromium)", [cpu(f"cli --all {b}{suffix}") for b in BACKENDS], ""),
            ("   CPU per `--provider cerebras` (same)", [cpu(f"cli cerebras {b}{suffix}") for b in BACKENDS], ""),
            (
                "   CPU ratio, --all / --provider (x)",
                [cpu(f"cli --all {b}{suffix}") / cpu(f"cli cerebras {b}{suffix}") for b in BACKENDS],
                "",
            ),
        ]
        for label, (nd, pw), goal in rows:
            print(f"{label:<44}{nd:>10.3f}{pw:>12.3f}{goal:>10}")
    print()
    print(f"{'baseline (cold, same emulator)':<34}{'ready':>8}{'total':>8}{'ours nd / it':>14}{'ours pw / it':>14}")
    for name in ("plain nodriver script", "plain zendriver script", "plain playwright script"):
        if name in results:
            ratios = [total(f"cold {b}") / total(name) for b in BACKENDS]
            print(f"{name:<34}{ready(name):>8.3f}{total(name):>8.3f}{ratios[0]:>13.2f}x{ratios[1]:>13.2f}x")
    if "cold nodriver shell" in results:
        print("ours with the headless shell, cold, / the plain script (which runs Chromium):")
        for name in ("plain nodriver script", "plain zendriver script", "plain playwright script"):
            if name in results:
                ratios = [total(f"cold {b} shell") / total(name) for b in BACKENDS]
                print(f"{name:<50}{ratios[0]:>13.2f}x{ratios[1]:>13.2f}x")
    print()
    print("per-phase medians (seconds):")
    for variant, runs in PHASE_LOG.items():
        if runs:
            parts = [f"{p} {_median([r.get(p, 0.0) for r in runs]):.3f}" for p in PHASES if any(p in r for r in runs)]
            print(f"  {variant:<20}" + " · ".join(parts))


if __name__ == "__main__":
    asyncio.run(main())
