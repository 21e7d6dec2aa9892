#!/usr/bin/env python3
"""Soak benchmark of ``harvest daemon``: many refresh cycles against the emulator, then check for leaks.

    .venv/bin/python scripts/bench_soak.py [--cycles 200] [--providers 2] [--ttl 3]

A *cycle* is one refresh of every provider. The emulator's clearance lives ``--ttl`` seconds and the daemon
refreshes ``ttl - 0.5`` s ahead, so it refreshes about every half second, sharing one Chromium. Reported:

* the daemon's RSS at cycle 20 and at the last cycle (pass: within +-10%);
* open fds, Chromium processes and temp profiles once the browser is idle-closed (pass: back to the
  baseline taken before the first browser launch: same fds, 0 processes, 0 profiles);
* the daemon's idle RSS with no browser running (pass: <= 80 MiB).

Runs for a few minutes; not part of the default test run. Exits 1 if any check fails.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402

from cache import generate_key  # noqa: E402
from tests.daemon._proc import chromium_pids  # noqa: E402
from tests.emulator._server import EmulatorThread  # noqa: E402
from tests.emulator._state import EmulatorConfig  # noqa: E402

HARVEST = str(Path(sys.executable).with_name("harvest"))
PROVIDERS = ("cloudflare", "cerebras", "deepinfra", "freenetfly")
MIB = 1024 * 1024


def rss(pid: int) -> int:
    """Resident set size of one process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def fds(pid: int) -> int:
    """Open file descriptors of one process."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def browser_rss(tmpdir: Path) -> int:
    """Summed RSS of the browser's processes (shared pages counted once per process: an upper bound)."""
    total = 0
    for pid in chromium_pids(str(tmpdir)):
        try:
            total += rss(pid)
        except OSError:
            pass
    return total


def profiles(tmpdir: Path) -> int:
    """Temp browser profiles in ``tmpdir``."""
    return len(list(tmpdir.glob("harvest-profile-*")))


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    """Poll until ``predicate`` holds; raise with ``what`` on timeout or if the daemon died."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise RuntimeError(f"the daemon exited ({proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def write_config(path: Path, url: str, names: tuple[str, ...], idle_close: float) -> None:
    """A daemon config for ``names`` on the emulator (none: the daemon idles)."""
    lines = ["[daemon]", f"browser_idle_close = {idle_close}", "max_concurrent = 2"]
    for name in names:
        lines += [f"[providers.{name}]", f'base_url = "{url}"']
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    """Run the soak and print the table; return 0 if every check passed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--providers", type=int, default=2, choices=range(1, len(PROVIDERS) + 1))
    parser.add_argument("--ttl", type=float, default=3.0, help="emulator clearance lifetime, seconds")
    parser.add_argument("--idle-close", type=float, default=3.0, help="browser_idle_close for the daemon")
    args = parser.parse_args()
    names = PROVIDERS[: args.providers]

    # A short TMPDIR: Chromium's singleton socket path must stay under 108 bytes.
    tmpdir = Path(tempfile.mkdtemp(prefix="hsoak-", dir="/tmp"))
    home = tmpdir / "home"
    home.mkdir()
    config = home / "config.toml"
    env = {
        **os.environ,
        "TMPDIR": str(tmpdir),
        "HARVEST_CACHE": str(home / "sessions.cache"),
        "HARVEST_CACHE_KEY": generate_key(),
        "HARVEST_CONFIG": str(config),
        "HARVEST_DAEMON_MIN_MARGIN": str(max(args.ttl - 0.5, 0.1)),
        "HARVEST_DAEMON_BACKOFF_BASE": "0.5",
        "HARVEST_DAEMON_BACKOFF_CAP": "5",
        "PYTHONUNBUFFERED": "1",
    }
    status_file = home / "sessions.cache.status.json"

    def harvests() -> dict[str, int]:
        try:
            document = orjson.loads(status_file.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return {}
        return {n: int(p.get("harvests", 0)) for n, p in (document.get("providers") or {}).items()}

    def cycles() -> int:
        counts = harvests()
        return min((counts.get(n, 0) for n in names), default=0)

    emulator = EmulatorThread(EmulatorConfig(clearance_ttl=args.ttl, think_ms=50.0))
    url = emulator.start()
    write_config(config, url, (), args.idle_close)
    log_path = home / "daemon.log"
    results: dict[str, Any] = {}
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [HARVEST, "daemon", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )
    try:
        # Baseline: the daemon up, nothing configured, no browser ever launched.
        wait_until(lambda: status_file.exists(), 30, "the status file", proc)
        time.sleep(1.0)
        results["baseline_fds"] = fds(proc.pid)
        results["baseline_rss"] = rss(proc.pid)
        results["baseline_browsers"] = len(chromium_pids(str(tmpdir)))
        results["baseline_profiles"] = profiles(tmpdir)

        write_config(config, url, names, args.idle_close)
        proc.send_signal(signal.SIGHUP)
        peak_browsers = 0
        peak_browser_rss = 0
        mark = 0
        next_report = 20
        while True:
            done = cycles()
            peak_browsers = max(peak_browsers, len(chromium_pids(str(tmpdir))))
            if done >= 20 and "rss_20" not in results:
                results["rss_20"] = rss(proc.pid)
                results["fds_20"] = fds(proc.pid)
                results["browser_rss_20"] = browser_rss(tmpdir)
            if done >= args.cycles:
                results["rss_end"] = rss(proc.pid)
                results["fds_end_busy"] = fds(proc.pid)
                results["browser_rss_end"] = browser_rss(tmpdir)
                break
            if done >= next_report:
                print(f"  cycle {done}/{args.cycles}  rss={rss(proc.pid) / MIB:.1f} MiB", file=sys.stderr)
                next_report += 20
            peak_browser_rss = max(peak_browser_rss, browser_rss(tmpdir)) if done > mark else peak_browser_rss
            mark = done
            if proc.poll() is not None:
                raise RuntimeError(f"the daemon exited ({proc.returncode})")
            if time.monotonic() - started > 60 * 60:
                raise RuntimeError(f"only {done} cycles in an hour")
            time.sleep(0.2)
        results["cycle_seconds"] = time.monotonic() - started
        results["peak_browsers"] = peak_browsers

        # Idle: records that last an hour, so nothing is due; the browser closes after idle_close.
        emulator.configure(clearance_ttl=3600.0)
        last = harvests()
        wait_until(lambda: all(harvests().get(n, 0) > last.get(n, 0) for n in names), 60, "hour-long records", proc)
        wait_until(lambda: not chromium_pids(str(tmpdir)), args.idle_close + 30, "the idle browser to close", proc)
        time.sleep(1.0)
        results["idle_fds"] = fds(proc.pid)
        results["idle_rss"] = rss(proc.pid)
        results["idle_browsers"] = len(chromium_pids(str(tmpdir)))
        results["idle_profiles"] = profiles(tmpdir)

        stop_started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        results["exit_code"] = proc.wait(20)
        results["stop_seconds"] = time.monotonic() - stop_started
        results["end_browsers"] = len(chromium_pids(str(tmpdir)))
        results["end_profiles"] = profiles(tmpdir)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for pid in chromium_pids(str(tmpdir)):  # only this run's browsers, by pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        emulator.stop()
    log_text = log_path.read_text(errors="replace")
    results["failures_logged"] = log_text.count("event=harvest.failed")
    results["harvests_logged"] = log_text.count("event=harvest.ok")
    shutil.rmtree(tmpdir, ignore_errors=True)
    return report(results, args.cycles, len(names))


def report(r: dict[str, Any], cycles: int, providers: int) -> int:
    """Print the table and return 0 if every check passed."""
    drift = (r["rss_end"] - r["rss_20"]) / r["rss_20"] * 100
    checks = [
        ("daemon RSS at cycle 20", f"{r['rss_20'] / MIB:.1f} MiB", ""),
        (f"daemon RSS at cycle {cycles}", f"{r['rss_end'] / MIB:.1f} MiB", f"{drift:+.1f}% (|d| <= 10%)"),
        (
            "browser RSS at cycle 20 / end",
            f"{r['browser_rss_20'] / MIB:.0f} / {r['browser_rss_end'] / MIB:.0f} MiB",
            "",
        ),
        ("open fds: baseline / busy / idle", f"{r['baseline_fds']} / {r['fds_end_busy']} / {r['idle_fds']}", ""),
        (
            "Chromium processes: peak / idle / exit",
            f"{r['peak_browsers']} / {r['idle_browsers']} / {r['end_browsers']}",
            "",
        ),
        ("temp profiles: idle / exit", f"{r['idle_profiles']} / {r['end_profiles']}", ""),
        ("daemon RSS idle, no browser", f"{r['idle_rss'] / MIB:.1f} MiB", "<= 80 MiB"),
        ("daemon RSS baseline (never launched)", f"{r['baseline_rss'] / MIB:.1f} MiB", ""),
        ("harvests ok / failed", f"{r['harvests_logged']} / {r['failures_logged']}", f"{providers} providers"),
        ("soak wall time", f"{r['cycle_seconds']:.0f} s", ""),
        ("SIGTERM -> exit", f"code {r['exit_code']} in {r['stop_seconds']:.1f} s", "0 within 10 s"),
    ]
    passed = {
        "rss flat": abs(drift) <= 10.0,
        "fds back to baseline": r["idle_fds"] <= r["baseline_fds"],
        "no browser when idle": r["idle_browsers"] == 0 and r["end_browsers"] == 0,
        "no profile left": r["idle_profiles"] == 0 and r["end_profiles"] == 0,
        "idle rss <= 80 MiB": r["idle_rss"] <= 80 * MIB,
        "clean exit": r["exit_code"] == 0 and r["stop_seconds"] < 10.0,
    }
    width = max(len(c[0]) for c in checks)
    print(f"\nharvest daemon soak: {cycles} cycles x {providers} providers")
    for name, value, note in checks:
        print(f"  {name:<{width}}  {value:<22} {note}")
    print()
    for name, ok in passed.items():
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}")
    return 0 if all(passed.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
