"""``harvest daemon`` as a real process, with real Chromium against the emulator."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from cache import AuthCache

from ._proc import HARVEST, ROOT, run_daemon, write_config

# Short clocks for tests: refresh 3 s before expiry, retry after 0.5 s, 1, 2, 2, ...
FAST = {
    "HARVEST_DAEMON_MIN_MARGIN": "3",
    "HARVEST_DAEMON_BACKOFF_BASE": "0.5",
    "HARVEST_DAEMON_BACKOFF_CAP": "2",
}


def _ok(provider: str) -> str:
    return f"event=harvest.ok provider={provider} "


def _assert_clean_exit(daemon: Any, code: int, seconds: float) -> None:
    log = daemon.log()
    assert code == 0, log
    assert seconds < 10.0, f"took {seconds:.1f} s\n{log}"
    assert daemon.chromium() == [], log
    assert daemon.profiles() == [], log
    assert "event=daemon.stopped" in log


def test_bad_config_fails_naming_key_and_line(isolated_env: Path) -> None:
    """A config with a bad value exits 2 at start, naming the key and its line."""
    config = isolated_env / "bad.toml"
    config.write_text('[daemon]\nbackend = "nodriver"\nmax_concurrent = "two"\n')
    result = subprocess.run(
        [HARVEST, "daemon", "--config", str(config)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 2, result.stderr
    assert "daemon.max_concurrent" in result.stderr
    assert "line 3" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_key_and_missing_file_fail_clearly(isolated_env: Path) -> None:
    """An unknown provider key, and a config file that does not exist, each exit 2 with the reason."""
    config = isolated_env / "bad.toml"
    config.write_text('[providers.cerebras]\nbase_url = "http://127.0.0.1:9"\nrefresh = 5\n')
    result = subprocess.run(
        [HARVEST, "daemon", "--config", str(config)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 2
    assert "providers.cerebras.refresh" in result.stderr and "line 3" in result.stderr
    missing = subprocess.run(
        [HARVEST, "daemon", "--config", str(isolated_env / "nope.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr


def test_refreshes_two_providers_while_a_reader_always_finds_a_valid_record(
    isolated_env: Path, emulator: Any, daemon_tmp: Path
) -> None:
    """Two 6-second sessions are each refreshed at least 3 times; a reader process never sees one expire."""
    emulator.configure(clearance_ttl=6.0, think_ms=100)
    providers = {"cloudflare": emulator.url, "cerebras": emulator.url}
    config = write_config(isolated_env / "daemon.toml", providers, browser_idle_close=60)
    with run_daemon(isolated_env, config, tmpdir=daemon_tmp, env=FAST) as daemon:
        reader = subprocess.Popen(
            [sys.executable, "-m", "tests.daemon._reader", "--providers", "cloudflare,cerebras", "--seconds", "16"],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        try:
            out, _ = reader.communicate(timeout=120)
        finally:
            if reader.poll() is None:
                reader.kill()
        daemon.wait_log(_ok("cloudflare"), count=4, timeout=30)
        daemon.wait_log(_ok("cerebras"), count=4, timeout=30)
        report = json.loads(out)
        status = daemon.status()
        code, seconds = daemon.stop()
    _assert_clean_exit(daemon, code, seconds)
    assert report.get("misses") == 0, report
    assert report["reads"] > 100
    assert min(report["generations"].values()) >= 3, report
    rows = {row["provider"]: row for row in status["providers"]}
    assert status["daemon"]["running"] is True
    assert rows["cloudflare"]["harvests"] >= 4 and rows["cerebras"]["harvests"] >= 4
    assert rows["cerebras"]["record"] == "fresh"
    assert rows["cerebras"]["next_run"] or rows["cerebras"]["running"]
    # Redaction: no cookie value or API key the reader saw ever reached the daemon's log.
    log = daemon.log()
    secrets = [s for s in report["secrets"] if len(s) >= 6]  # flags like "1" are not secrets
    assert len(secrets) >= 6, "the reader saw too few secrets to look for"
    for secret in secrets:
        assert secret not in log


def test_verbose_log_never_contains_secrets(isolated_env: Path, emulator: Any, daemon_tmp: Path) -> None:
    """Even at debug level (browser-driver chatter included), the log never holds a cookie value or API key."""
    config = write_config(isolated_env / "daemon.toml", {"cerebras": emulator.url})
    with run_daemon(isolated_env, config, tmpdir=daemon_tmp, env=FAST, args=("--verbose",)) as daemon:
        daemon.wait_log(_ok("cerebras"), timeout=60)
        record = AuthCache.open().get("cerebras")
        code, seconds = daemon.stop()
    _assert_clean_exit(daemon, code, seconds)
    assert record is not None and record.cookies and record.api_key
    log = daemon.log()
    for secret in [c.value for c in record.cookies if len(c.value) >= 6] + [record.api_key]:
        assert secret not in log
    assert re.search(r"(?i)bearer\s+(?!\*\*\*)\S{8,}", log) is None


def test_recovers_by_itself_after_the_site_blocks_for_a_while(
    isolated_env: Path, emulator: Any, daemon_tmp: Path
) -> None:
    """While the site blocks, failures back off and show in status; once it heals the daemon recovers alone."""
    emulator.configure(variant="blocked")
    config = write_config(isolated_env / "daemon.toml", {"cloudflare": emulator.url})
    with run_daemon(isolated_env, config, tmpdir=daemon_tmp, env=FAST) as daemon:
        daemon.wait_log("event=harvest.failed provider=cloudflare", count=3, timeout=90)
        failing = {row["provider"]: row for row in daemon.status()["providers"]}["cloudflare"]
        emulator.configure(variant="normal")
        daemon.wait_log(_ok("cloudflare"), timeout=60)
        healed = {row["provider"]: row for row in daemon.status()["providers"]}["cloudflare"]
        code, seconds = daemon.stop()
    _assert_clean_exit(daemon, code, seconds)
    assert failing["consecutive_failures"] >= 3 and failing["last_error"]
    assert failing["record"] == "missing" and failing["last_success"] is None
    assert healed["consecutive_failures"] == 0 and healed["record"] == "fresh"
    assert healed["last_failure"] and healed["last_success"] > healed["last_failure"]
    retry_delays = [float(m) for m in re.findall(r"event=harvest.failed .*?retry_in=([\d.]+)", daemon.log())]
    assert retry_delays[0] < retry_delays[2], retry_delays  # backing off, not hammering


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_mid_harvest_exits_zero_and_leaves_nothing(
    isolated_env: Path, emulator: Any, daemon_tmp: Path, sig: signal.Signals
) -> None:
    """A stop signal during a harvest exits 0 within 10 s with no Chromium process and no temp profile left."""
    emulator.configure(think_ms=60_000)  # the challenge never clears in time: the harvest is mid-flight
    config = write_config(isolated_env / "daemon.toml", {"cloudflare": emulator.url})
    with run_daemon(isolated_env, config, tmpdir=daemon_tmp, env=FAST) as daemon:
        daemon.wait_log("event=harvest.started provider=cloudflare", timeout=30)
        daemon.wait_for(lambda: bool(daemon.chromium()) and bool(daemon.profiles()), 30, "a running browser")
        daemon.wait_for(lambda: emulator.stats["challenge_pages"] >= 1, 30, "the challenge page")
        code, seconds = daemon.stop(sig)
    _assert_clean_exit(daemon, code, seconds)
    log = daemon.log()
    assert "event=daemon.cancelling count=1" in log
    assert "event=harvest.cancelled provider=cloudflare" in log


def test_sighup_starts_a_provider_added_to_the_config(isolated_env: Path, emulator: Any, daemon_tmp: Path) -> None:
    """After SIGHUP with a new provider in the config, that provider is harvested; the status server shows it."""
    config = write_config(isolated_env / "daemon.toml", {"cloudflare": emulator.url}, listen="127.0.0.1:0")
    with run_daemon(isolated_env, config, tmpdir=daemon_tmp, env=FAST) as daemon:
        daemon.wait_log(_ok("cloudflare"), timeout=60)
        port = int(re.search(r"event=daemon.started .*listen=127\.0\.0\.1:(\d+)", daemon.log()).group(1))  # type: ignore[union-attr]
        write_config(config, {"cloudflare": emulator.url, "deepinfra": emulator.url}, listen="127.0.0.1:0")
        daemon.send(signal.SIGHUP)
        daemon.wait_log("event=config.reloaded added=deepinfra", timeout=30)
        daemon.wait_log(_ok("deepinfra"), timeout=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=10) as response:
            report = json.loads(response.read())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            assert response.status == 200
        code, seconds = daemon.stop()
    _assert_clean_exit(daemon, code, seconds)
    assert {row["provider"] for row in report["providers"]} >= {"cloudflare", "deepinfra"}
    assert 'harvest_harvests_total{outcome="success",provider="deepinfra"} 1.0' in metrics
    assert AuthCache.open().get("deepinfra") is not None


def _main_browser_pid(daemon: Any) -> int | None:
    for pid in daemon.chromium():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"--remote-debugging-port" in cmdline and b"--type=" not in cmdline:
            return pid
    return None


def test_browser_killed_mid_harvest_is_replaced_and_the_harvest_retried(
    isolated_env: Path, emulator: Any, daemon_tmp: Path
) -> None:
    """Chromium killed mid-harvest: the harvest fails, a new browser is launched, the retry succeeds."""
    emulator.configure(think_ms=4000)
    config = write_config(isolated_env / "daemon.toml", {"cloudflare": emulator.url}, listen="127.0.0.1:0")
    with run_daemon(isolated_env, config, tmpdir=daemon_tmp, env=FAST) as daemon:
        daemon.wait_log("event=harvest.started provider=cloudflare", timeout=30)
        daemon.wait_for(lambda: emulator.stats["challenge_pages"] >= 1, 30, "the challenge page")
        victim = _main_browser_pid(daemon)
        assert victim is not None, daemon.log()
        os.kill(victim, signal.SIGKILL)
        daemon.wait_log("event=harvest.failed provider=cloudflare", timeout=30)
        daemon.wait_log(_ok("cloudflare"), timeout=60)
        port = int(re.search(r"listen=127\.0\.0\.1:(\d+)", daemon.log()).group(1))  # type: ignore[union-attr]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        code, seconds = daemon.stop()
    _assert_clean_exit(daemon, code, seconds)
    assert "BrowserError" in daemon.log()
    assert "harvest_browser_restarts_total 1.0" in metrics
    assert 'harvest_harvests_total{outcome="failure",provider="cloudflare"} 1.0' in metrics
