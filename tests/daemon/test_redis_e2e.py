"""Real daemons and a real one-shot harvest (real Chromium, the emulator) sharing one cache on Redis."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from cache import AuthCache

from ._proc import HARVEST, ROOT, run_daemon, write_config


def test_two_daemons_and_a_cli_harvest_make_one_browser_run(
    isolated_env: Path, emulator: Any, daemon_tmp: Path, redis_location: str
) -> None:
    """Two daemons starting together and `harvest --provider cerebras` at once: one clearance at the emulator."""
    emulator.configure(think_ms=1500)  # a slow challenge, so the three really overlap
    config = write_config(isolated_env / "daemon.toml", {"cerebras": emulator.url}, browser_idle_close=60)
    env = {"HARVEST_CACHE": redis_location}
    other_tmp = Path(tempfile.mkdtemp(prefix="hd-", dir="/tmp"))
    try:
        with contextlib.ExitStack() as stack:
            first = stack.enter_context(run_daemon(isolated_env, config, tmpdir=daemon_tmp, env=env))
            second = stack.enter_context(run_daemon(isolated_env, config, tmpdir=other_tmp, env=env))
            one_shot = subprocess.run(
                [HARVEST, "--provider", "cerebras", "--base-url", emulator.url],
                env=os.environ | env | {"TMPDIR": str(daemon_tmp)},
                capture_output=True, text=True, timeout=180, cwd=ROOT,
            )  # fmt: skip
            assert one_shot.returncode == 0, one_shot.stderr
            first.wait_log("event=harvest.ok provider=cerebras ", timeout=120)
            second.wait_log("event=harvest.ok provider=cerebras ", timeout=120)
        assert emulator.stats["clearances_issued"] == 1, emulator.stats
        record = AuthCache.open(redis_location).get("cerebras")
        assert record is not None and not record.is_expired
    finally:
        shutil.rmtree(other_tmp, ignore_errors=True)


def test_daemon_backs_off_while_redis_is_down_and_resumes(
    isolated_env: Path, emulator: Any, daemon_tmp: Path, own_redis: Any
) -> None:
    """redis-server killed mid-run: refreshes fail with a typed cache error (no traceback, the daemon lives), and
    after a restart the daemon stores records again."""
    emulator.configure(clearance_ttl=5.0, think_ms=100)
    config = write_config(isolated_env / "daemon.toml", {"cerebras": emulator.url}, browser_idle_close=60)
    url = own_redis.url("fault")
    env = {
        "HARVEST_CACHE": url,
        "HARVEST_DAEMON_MIN_MARGIN": "3",
        "HARVEST_DAEMON_BACKOFF_BASE": "0.5",
        "HARVEST_DAEMON_BACKOFF_CAP": "2",
    }
    with run_daemon(isolated_env, config, tmpdir=daemon_tmp, env=env) as daemon:
        daemon.wait_log("event=harvest.ok provider=cerebras ", timeout=120)
        own_redis.kill()
        daemon.wait_log("event=harvest.failed provider=cerebras", timeout=60)
        assert daemon.proc.poll() is None
        ok_before = daemon.log().count("event=harvest.ok provider=cerebras ")
        own_redis.start()
        daemon.wait_log("event=harvest.ok provider=cerebras ", count=ok_before + 1, timeout=120)
        assert "Traceback" not in daemon.log() and own_redis.password not in daemon.log()
        code, _ = daemon.stop()
    assert code == 0
    assert AuthCache.open(url).get("cerebras") is not None
