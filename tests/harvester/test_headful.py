"""`--headful` for real: a visible Chromium on a real X server (Xvfb), with the test playing the person.

Nothing here clicks a challenge widget or fills a form through the browser. The test tells the emulator, over
its test-only `/__emulator__/person/...` routes, that a person acted, and the emulator's own page finishes as
it would after that person's click or sign-in.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cache import AuthCache
from harvester import BrowserError, ChallengeTimeout, Harvester, harvest
from harvester._recipes import browser_origin

from .conftest import MARK_VAR, chromium_pids, wait_clean

Factory = Callable[..., Any]
BACKENDS = ["nodriver", "playwright"]
XVFB_START_TIMEOUT = 10.0
XVFB_STOP_TIMEOUT = 5.0


def _read_display_number(fd: int, proc: subprocess.Popen[bytes], timeout: float) -> str:
    """What Xvfb writes to its -displayfd once it listens: the display number it picked, and a newline."""
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or proc.poll() is not None:
            break
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            chunk = os.read(fd, 64)
            if not chunk:
                break
            data += chunk
    return data.decode().strip()


@pytest.fixture
def x_display(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real X server (Xvfb) on a free display, as $DISPLAY for this test; stopped, reaped and checked gone after."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.fail(
            "Xvfb is not installed, and the --headful tests need a real X server: "
            "run scripts/_setup.sh as root, or `apt-get install xvfb`"
        )
    read_fd, write_fd = os.pipe()
    log = tempfile.TemporaryFile()
    # -displayfd: Xvfb picks the first free display itself (no race with other X servers on this machine) and
    # writes its number once it accepts connections.
    proc = subprocess.Popen(
        [xvfb, "-displayfd", str(write_fd), "-screen", "0", "1280x800x24", "-nolisten", "tcp", "-noreset"],
        pass_fds=(write_fd,),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    os.close(write_fd)
    try:
        number = _read_display_number(read_fd, proc, XVFB_START_TIMEOUT)
    finally:
        os.close(read_fd)
    try:
        if not number.isdigit():
            log.seek(0)
            output = log.read().decode("utf-8", "replace").strip()
            pytest.fail(f"Xvfb did not start within {XVFB_START_TIMEOUT:g} s (exit {proc.poll()}): {output}")
        display = f":{number}"
        monkeypatch.setenv("DISPLAY", display)
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        yield display
    finally:
        proc.terminate()
        try:
            proc.wait(XVFB_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(XVFB_STOP_TIMEOUT)
        log.close()
    assert not Path(f"/proc/{proc.pid}").exists(), f"Xvfb (pid {proc.pid}) is still there"
    assert not Path(f"/tmp/.X{number}-lock").exists(), f"Xvfb left /tmp/.X{number}-lock behind"


async def until(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    """Poll a condition owned by another thread (the emulator's counters) until it holds."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 (no event to await: the emulator runs on its own loop)
            await asyncio.sleep(0.05)


async def person(url: str, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Play the person: POST to one of the emulator's `/__emulator__/person/...` routes."""
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/__emulator__/person/{action}", json=body or {}) as resp:
            assert resp.status == 200, await resp.text()
            answer: dict[str, Any] = await resp.json()
            return answer


def browser_process() -> tuple[list[str], dict[str, str]]:
    """The command line and environment of the browser this test launched (not its helper processes)."""
    for pid in chromium_pids(os.environ[MARK_VAR]):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
            raw_env = Path(f"/proc/{pid}/environ").read_bytes().decode("utf-8", "replace").split("\0")
        except OSError:
            continue
        if any(a.startswith("--remote-debugging-port") for a in argv) and not any(
            a.startswith("--type=") for a in argv
        ):
            return argv, dict(item.split("=", 1) for item in raw_env if "=" in item)
    raise AssertionError("no browser process of this test is running")


def assert_nothing_left(root: Path) -> None:
    """No Chromium process of this test and no temp profile remain."""
    pids, dirs = wait_clean(os.environ[MARK_VAR], root)
    assert not pids, f"leftover Chromium processes: {sorted(pids)}"
    assert not dirs, f"leftover profiles: {sorted(dirs)}"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_person_completes_the_interactive_challenge(
    emulator_factory: Factory, x_display: str, no_leftovers: Path, backend: str
) -> None:
    """With --headful a visible browser waits on the widget; once the person completes it, the harvest succeeds."""
    emu = emulator_factory(variant="interactive", think_ms=50)
    cache = AuthCache.open()
    steps: list[str] = []
    task = asyncio.create_task(
        harvest("cloudflare", base_url=emu.url, headful=True, backend=backend, cache=cache, on_step=steps.append)
    )
    # The widget is up and the harvest said it waits for a person (under load it may see the page a moment after
    # the widget's first poll: a person who solved it before then would clear the page before it was announced).
    waiting = "waiting for a person (interactive)"
    await until(lambda: (emu.stats["person_polls"] > 0 and waiting in steps) or task.done())
    assert not task.done(), task
    argv, environ = browser_process()
    assert await person(emu.url, "solve") == {"solved": 1}
    record = await asyncio.wait_for(task, 30)

    assert not any(a.startswith("--headless") for a in argv), argv
    assert environ.get("DISPLAY") == x_display  # a window on our X server (it exits without one)
    clearance = record.cookie_dict()["cf_clearance"]
    assert emu.state.clearance_valid(clearance, record.user_agent)
    assert emu.stats["clearances_issued"] == 1
    stored = cache.get("cloudflare")
    assert stored is not None and stored.cookie_dict()["cf_clearance"] == clearance
    assert record.extras["backend"] == backend
    assert_nothing_left(no_leftovers)


async def test_person_signs_in_through_another_site(
    emulator_factory: Factory, x_display: str, no_leftovers: Path
) -> None:
    """A person signing in (by way of an identity provider on another origin) gets the harvest its API key."""
    emu = emulator_factory(variant="login-required", think_ms=50)
    cache = AuthCache.open()
    task = asyncio.create_task(harvest("cerebras", base_url=emu.url, headful=True, cache=cache))
    await until(lambda: emu.stats["session_requests"] > 0 or task.done())  # the harvest waits for a login
    assert not task.done(), task
    argv, _ = browser_process()
    assert await person(emu.url, "sign-in", {"username": "ada"}) == {"ok": True}
    record = await asyncio.wait_for(task, 30)

    assert not any(a.startswith("--headless") for a in argv), argv
    assert record.api_key and emu.state.api_key_valid(record.api_key)
    assert emu.stats["logins"] == 1
    assert emu.state.clearance_valid(record.cookie_dict()["cf_clearance"], record.user_agent)
    assert "authjs.session-token" in record.cookie_dict()
    stored = cache.get("cerebras")
    assert stored is not None and stored.api_key == record.api_key
    assert_nothing_left(no_leftovers)


@pytest.mark.parametrize(
    ("variant", "provider", "message"),
    [
        ("interactive", "cloudflare", "nobody completed the interactive challenge"),
        ("login-required", "cerebras", "no signed-in session"),
    ],
)
async def test_person_who_never_acts_times_out_within_the_deadline(
    emulator_factory: Factory,
    x_display: str,
    no_leftovers: Path,
    monkeypatch: pytest.MonkeyPatch,
    variant: str,
    provider: str,
    message: str,
) -> None:
    """If nobody acts in the window, the headful harvest ends with ChallengeTimeout at its deadline."""
    emu = emulator_factory(variant=variant, think_ms=50)
    cache = AuthCache.open()
    loop = asyncio.get_running_loop()
    loading: list[float] = []  # when the page started loading: the harvest's clock starts there

    def step(text: str) -> None:
        if text.startswith("loading "):
            loading.append(loop.time())

    with pytest.raises(ChallengeTimeout) as info:
        await harvest(provider, base_url=emu.url, headful=True, timeout=3.0, cache=cache, on_step=step)
    elapsed = loop.time() - loading[0]

    assert 3.0 <= elapsed < 3.0 + 3.0  # the deadline, then closing the browser on a busy 2-core machine
    assert info.value.timeout == 3.0 and info.value.provider == provider
    assert message in str(info.value) and "browser window" in str(info.value)
    assert "--headful" not in str(info.value)  # it already was
    assert emu.stats["person_polls"] > 0  # the page really was waiting for a person
    assert cache.get(provider) is None
    assert_nothing_left(no_leftovers)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_person_who_closes_the_tab_ends_the_harvest_at_once(
    emulator_factory: Factory, x_display: str, no_leftovers: Path, backend: str
) -> None:
    """Closing the harvest's tab ends the headful harvest with a BrowserError that says so, not a long wait."""
    emu = emulator_factory(variant="interactive", think_ms=50)
    loop = asyncio.get_running_loop()
    async with Harvester(backend, headful=True) as harvester:
        task = asyncio.create_task(harvester.harvest("cloudflare", base_url=emu.url))
        await until(lambda: emu.stats["person_polls"] > 0 or task.done())
        assert not task.done(), task
        assert harvester._browser.process is not None
        await asyncio.to_thread(close_tab, harvester._browser.process.endpoint, emu.url)
        closed = loop.time()
        with pytest.raises(BrowserError) as info:
            await asyncio.wait_for(task, 30)
        assert loop.time() - closed < 5.0  # the headful deadline is minutes away
        assert harvester.browser_running  # the browser itself is fine
    assert "tab was closed" in str(info.value) and info.value.provider == "cloudflare"
    assert_nothing_left(no_leftovers)


def close_tab(endpoint: str, url: str) -> None:
    """Close the tab showing ``url``, as a person clicking its close button would (DevTools HTTP API)."""
    devtools = "http://" + endpoint.split("/")[2]
    with urllib.request.urlopen(devtools + "/json/list", timeout=5) as resp:
        targets = json.load(resp)
    ids = [t["id"] for t in targets if t.get("type") == "page" and t.get("url", "").startswith(url)]
    assert len(ids) == 1, targets
    with urllib.request.urlopen(f"{devtools}/json/close/{ids[0]}", timeout=5) as resp:
        resp.read()


def unserved_display() -> str:
    """A display number no X server on this machine serves."""
    number = next(n for n in range(900, 1000) if not os.path.exists(f"/tmp/.X11-unix/X{n}"))
    return f":{number}"


@pytest.mark.parametrize(
    ("display", "message"),
    [(None, "there is no display ($DISPLAY and $WAYLAND_DISPLAY are unset)"), ("unserved", "needs a display Chromium")],
    ids=["unset", "unserved"],
)
async def test_headful_without_a_display_says_so(
    emulator: Any, no_leftovers: Path, monkeypatch: pytest.MonkeyPatch, display: str | None, message: str
) -> None:
    """--headful with no $DISPLAY (or one nobody serves) is a BrowserError that names the display problem."""
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if display is None:
        monkeypatch.delenv("DISPLAY", raising=False)
    else:
        monkeypatch.setenv("DISPLAY", unserved_display())
    with pytest.raises(BrowserError) as info:
        await harvest("cloudflare", base_url=emulator.url, headful=True, cache=AuthCache.open())
    assert message in str(info.value), info.value
    assert emulator.stats["challenge_pages"] == 0
    assert_nothing_left(no_leftovers)


def test_browser_origin_spells_origins_as_location_origin_does() -> None:
    """The session check compares against location.origin: lower case, no default port, IPv6 in brackets."""
    assert browser_origin("HTTPS://Example.COM:443") == "https://example.com"
    assert browser_origin("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert browser_origin("http://[::1]:80") == "http://[::1]"
    assert browser_origin("https://inference.cerebras.ai") == "https://inference.cerebras.ai"
