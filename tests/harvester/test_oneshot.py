"""`harvest` with several targets: the exit code is the worst of them, and the summary line (issue 9/10)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from cache import Cookie, SessionRecord, utcnow
from harvester.cli import _exit
from harvester.cli._oneshot import summary_line

from .conftest import harvest_cmd

Factory = Callable[..., Any]


def test_several_targets_exit_with_the_worst_code(emulator_factory: Factory, harvest_env: dict[str, str]) -> None:
    """A blocked provider (5) then a site that needs --headful (7) exits 7, not the first failure's 5."""
    blocked = emulator_factory(variant="blocked")
    interactive = emulator_factory(variant="interactive")
    env = {**harvest_env, "HARVEST_CLOUDFLARE_BASE_URL": blocked.url, "HARVEST_CEREBRAS_BASE_URL": interactive.url}
    out = subprocess.run(
        harvest_cmd("--provider", "cloudflare", "--provider", "cerebras"),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Access denied" in out.stderr and "--headful" in out.stderr
    assert out.returncode == _exit.NEEDS_HEADFUL, out.stderr


def test_summary_line_words_expiry_like_the_cache_list() -> None:
    """The one-shot summary uses the cache's duration wording, and says "expired" for an expired record."""
    now = utcnow()
    record = SessionRecord(provider="cerebras", cookies=[Cookie("a", "b")], expires_at=now + timedelta(seconds=3725))
    assert (
        summary_line(record, elapsed=1.25, now=now)
        == "cerebras: 1 cookie, api key no, expires in 62 min, browser, 1.2 s"
    )
    old = record.replace(expires_at=now - timedelta(seconds=120))
    assert "expired 2 min ago" in summary_line(old, elapsed=1.0, now=now)


def _exit_now(code: str, *, stdout: int = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    """Run a child that prints 1,000 characters to its stdout (a pipe: they stay in the buffer), then ``exit_now(code)``."""
    script = f"from harvester._entry import exit_now; print('x' * 1000, end=''); exit_now({code})"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as by default
    return subprocess.run(
        [sys.executable, "-c", script],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


def test_exit_now_flushes_output_and_keeps_the_code() -> None:
    """The one-shot's quick exit (no interpreter teardown) still writes all buffered output and exits as sys.exit."""
    done = _exit_now("3")
    assert (len(done.stdout), done.returncode, done.stderr) == (1000, 3, "")
    assert _exit_now("None").returncode == 0
    message = _exit_now("'bad thing'")
    assert (message.returncode, message.stderr.strip()) == (1, "bad thing")


def test_exit_now_with_closed_stdout_exits_120_without_traceback() -> None:
    """Output that cannot be written (the reader is gone) ends with Python's own status 120, and no traceback."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = _exit_now("0", stdout=write)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (120, "")


def test_ctrl_c_while_loading_a_harvest_exits_130_and_removes_the_early_browser(
    harvest_env: dict[str, str], no_leftovers: Any
) -> None:
    """Ctrl-C while `harvest --provider` still loads (Chromium already forked) exits 130 quietly, and neither that
    Chromium nor its profile outlives the command (the fixture checks both)."""
    import signal

    env = {**harvest_env, "PYTHONPROFILEIMPORTTIME": "1", "HARVEST_CEREBRAS_BASE_URL": "http://127.0.0.1:9"}
    process = subprocess.Popen(
        harvest_cmd("--provider", "cerebras"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert process.stderr is not None
    for line in process.stderr:  # the first import main makes after forking Chromium and setting its handler
        if line.rstrip().endswith("| harvester.cli._exit"):
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    said = [line for line in err.splitlines() if line.strip() and not line.startswith("import time:")]
    assert process.returncode == _exit.INTERRUPTED, err[-2000:]
    assert said == []
