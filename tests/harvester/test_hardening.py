"""Issue 9's harvester defects, each against real Chromium: bugs are bugs, a site that is down is not a dead
browser, bad URLs are usage errors, and a killed harvest leaves nothing behind for long."""

from __future__ import annotations

import asyncio
import http.server
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harvester import BlockedError, Harvester, SiteUnreachableError
from harvester._browser import OWNER_FILE, PROFILE_PREFIX, BrowserProcess, find_browser, remove_stale_profiles
from harvester._reaper import our_children
from harvester.cli import _exit

from .conftest import ROOT, chromium_pids, harvest_cmd, wait_for
from .conftest import run_harvest as run

BACKENDS = ["nodriver", "playwright"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def refused_url() -> str:
    """A loopback URL whose port nobody listens on (connection refused)."""
    return f"http://127.0.0.1:{_free_port()}/"


@pytest.fixture
def always_503() -> Iterator[str]:
    """A server that answers every request with HTTP 503 and a plain page."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html><head><title>Service Unavailable</title></head><body>down</body></html>"
            self.send_response(503)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A server that accepts connections and never answers a byte."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        sock.close()


# -- 1. a bug is a bug, not a dead browser ----------------------------------------------------------------


async def test_a_bug_in_a_harvest_is_not_a_browser_error(emulator: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """An AttributeError in our code reaches the caller as itself, and the browser stays up for the next harvest."""
    import harvester._harvest as module

    def broken(state: Any) -> Any:
        raise AttributeError("'NoneType' object has no attribute 'lower'")

    async with Harvester() as harvester:
        monkeypatch.setattr(module, "classify", broken)
        with pytest.raises(AttributeError):
            await harvester.harvest("cloudflare", base_url=emulator.url)
        assert harvester.browser_running
        monkeypatch.undo()
        record = await harvester.harvest("cloudflare", base_url=emulator.url)
        assert harvester.browser_launches == 1
    assert record.cookie_dict()["cf_clearance"]


_BROKEN_CLI = """
import sys
import harvester._harvest as module

def broken(state):
    raise KeyError("demoApiKey")

module.classify = broken
from harvester.cli import main
main(sys.argv[1:], prog_name="harvest")
"""


def test_a_bug_exits_70_with_a_traceback(emulator: Any, harvest_env: dict[str, str]) -> None:
    """The CLI reports a bug as an internal error: exit 70, "please report this", and the traceback."""
    out = subprocess.run(
        [sys.executable, "-c", _BROKEN_CLI, "--provider", "cloudflare", "--base-url", emulator.url],
        env=harvest_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == _exit.INTERNAL_ERROR, out.stderr
    assert "internal error in harvest" in out.stderr and "(please report this)" in out.stderr
    assert "Traceback (most recent call last)" in out.stderr and "KeyError: 'demoApiKey'" in out.stderr
    assert "check that Chromium runs" not in out.stderr


# -- 2, 3. a site that is down, failing or silent ---------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
async def test_refused_connection_is_site_unreachable_and_keeps_the_browser(refused_url: str, backend: str) -> None:
    """A port nobody listens on raises SiteUnreachableError ("connection refused"); the browser stays up."""
    async with Harvester(backend, timeout=15) as harvester:
        with pytest.raises(SiteUnreachableError) as info:
            await harvester.harvest(None, url=refused_url)
        assert harvester.browser_running
    assert str(info.value) == f"cannot reach {refused_url}: connection refused"
    assert info.value.reason == "ERR_CONNECTION_REFUSED" and info.value.url == refused_url


def test_unreachable_site_exits_9(refused_url: str, harvest_env: dict[str, str]) -> None:
    """`harvest --url` of a refused port exits 9 with one line, and an unsafe port likewise."""
    out = run(harvest_env, "--url", refused_url, "--timeout", "15")
    assert out.returncode == _exit.SITE_UNREACHABLE, out.stderr
    assert f"cannot reach {refused_url}: connection refused" in out.stderr
    assert "Traceback" not in out.stderr
    unsafe = run(harvest_env, "--url", "http://127.0.0.1:6000/", "--timeout", "15")  # X11's port: unsafe
    assert unsafe.returncode == _exit.SITE_UNREACHABLE, unsafe.stderr
    assert "unsafe port" in unsafe.stderr


async def test_site_that_always_answers_503_is_blocked(always_503: str) -> None:
    """A site that answers 503 until the deadline ends as "kept answering HTTP 503 for N s" (BlockedError)."""
    async with Harvester(timeout=6) as harvester:
        with pytest.raises(BlockedError) as info:
            await harvester.harvest(None, url=always_503)
    assert "kept answering HTTP 503 for 6 s" in str(info.value) and info.value.status == 503


def test_always_503_exits_5(always_503: str, harvest_env: dict[str, str]) -> None:
    """The CLI maps the 503 site to exit 5 (blocked or unavailable)."""
    out = run(harvest_env, "--url", always_503, "--timeout", "6")
    assert out.returncode == _exit.BLOCKED, out.stderr
    assert "kept answering HTTP 503 for 6 s" in out.stderr


async def test_site_that_never_answers_says_so(silent_url: str) -> None:
    """A server that never answers ends as "no answer from URL within N s", not as an uncleared challenge."""
    async with Harvester(timeout=6) as harvester:
        with pytest.raises(SiteUnreachableError) as info:
            await harvester.harvest(None, url=silent_url)
    assert f"no answer from {silent_url} within 6 s" in str(info.value)


# -- 5. URLs a browser must not open ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "data:text/html,<b>x</b>", "http://127.0.0.1:99999/", "", "file:///etc/passwd"]
)
def test_url_that_is_not_http_exits_2(url: str, harvest_env: dict[str, str]) -> None:
    """`--url` must be an http(s) URL: anything else is a usage error before any browser starts."""
    out = run(harvest_env, "--url", url)
    assert out.returncode == _exit.USAGE, out.stderr
    assert "--url must be an http(s) URL" in out.stderr and "Traceback" not in out.stderr


def test_url_with_a_password_exits_2_and_masks_it(harvest_env: dict[str, str]) -> None:
    """A URL with user:password@ is refused (exit 2) and the password only ever shows as ***."""
    out = run(harvest_env, "--url", "http://ada:hunter2@127.0.0.1:8080/")
    assert out.returncode == _exit.USAGE, out.stderr
    assert "hunter2" not in out.stdout + out.stderr and "ada:***@" in out.stderr


def test_base_url_that_is_not_http_exits_2(harvest_env: dict[str, str]) -> None:
    """`--base-url` gets the same check."""
    out = run(harvest_env, "--provider", "cerebras", "--base-url", "javascript:alert(1)")
    assert out.returncode == _exit.USAGE, out.stderr
    assert "--base-url must be an http(s) URL" in out.stderr


# -- 17. profiles of killed harvests -----------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _profile(root: Path, owner: str | None) -> Path:
    path = Path(tempfile.mkdtemp(prefix=PROFILE_PREFIX, dir=root))
    (path / "Default").mkdir()
    if owner is not None:
        (path / OWNER_FILE).write_text(owner)
    return path


def test_profiles_of_dead_owners_are_removed(no_leftovers: Path) -> None:
    """A profile whose owner is dead (or whose pid now belongs to another process) goes; a live one stays."""
    dead = _profile(no_leftovers, f"{_dead_pid()} 12345")
    reused = _profile(no_leftovers, f"{os.getpid()} 1")  # our pid, but not our start time: a reused pid
    ours = _profile(no_leftovers, Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19])
    ours_token = f"{os.getpid()} {(ours / OWNER_FILE).read_text()}"
    (ours / OWNER_FILE).write_text(ours_token)
    unowned = _profile(no_leftovers, None)  # being created, or not ours to judge
    removed = remove_stale_profiles((str(no_leftovers),))
    assert sorted(removed) == sorted([str(dead), str(reused)])
    assert ours.exists() and unowned.exists()
    for path in (ours, unowned):
        subprocess.run(["rm", "-rf", str(path)], check=True)


def test_killed_harvest_profile_is_removed_by_the_next_one(
    emulator_factory: Callable[..., Any], harvest_env: dict[str, str], no_leftovers: Path
) -> None:
    """SIGKILL of a harvest mid-challenge leaks its profile only until the next harvest starts."""
    slow = emulator_factory(think_ms=60_000)
    proc = subprocess.Popen(
        harvest_cmd("--provider", "cloudflare", "--base-url", slow.url), env=harvest_env, stderr=subprocess.DEVNULL
    )
    try:
        assert wait_for(lambda: slow.stats["challenge_pages"] > 0, 60)
        profiles = [p for p in no_leftovers.iterdir() if p.name.startswith(PROFILE_PREFIX)]
        assert len(profiles) == 1 and (profiles[0] / OWNER_FILE).read_text().startswith(f"{proc.pid} ")
        proc.kill()
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert wait_for(lambda: not chromium_pids(harvest_env["HARVEST_TEST_MARK"]), 10)
    assert profiles[0].exists()  # leaked: nothing ran its teardown
    fast = emulator_factory(think_ms=20)
    out = run(harvest_env, "--provider", "cloudflare", "--base-url", fast.url)
    assert out.returncode == _exit.OK, out.stderr
    assert not profiles[0].exists()


# -- 18. no zombie crash handlers after an interrupt during launch -----------------------------------------


def _crashpad_children() -> set[int]:
    return {pid for pid, _state, _group, comm in our_children() if comm.startswith("chrome_crashpad")}


async def test_interrupt_during_launch_leaves_no_zombie(no_leftovers: Path) -> None:
    """Cancelling a launch after Chromium forked its crash handlers reaps them too (we are their subreaper)."""
    before = _crashpad_children()
    process = BrowserProcess(find_browser())
    task = asyncio.create_task(process.start())
    async with asyncio.timeout(20):
        while not (_crashpad_children() - before) and not task.done():  # noqa: ASYNC110 (no event for a fork)
            await asyncio.sleep(0.002)
    assert not task.done(), "the launch finished before a crash handler was seen"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.3)  # a handler that exits after the teardown must not stay a zombie either
    await process.stop()
    assert _crashpad_children() - before == set()


def test_sigterm_is_still_quiet(emulator_factory: Callable[..., Any], harvest_env: dict[str, str]) -> None:
    """(Guard) SIGTERM mid-harvest still exits 143 with one line and no traceback after these changes."""
    slow = emulator_factory(think_ms=60_000)
    proc = subprocess.Popen(
        harvest_cmd("--provider", "cloudflare", "--base-url", slow.url),
        env=harvest_env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for(lambda: slow.stats["challenge_pages"] > 0, 60)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err
