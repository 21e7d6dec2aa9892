"""The Harvester against real Chromium and the emulator, in process, with both backends."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from cache import AuthCache
from harvester import BrowserError, ChallengeTimeout, Harvester, HarvestError, NeedsHeadfulError, harvest
from harvester._classify import classify
from harvester._driver import make_driver, snapshot
from harvester._harvest import _is_page_churn
from harvester._identity import build_identity

BACKENDS = ["nodriver", "playwright"]


async def until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll a condition owned by another thread (the emulator's counters) until it holds."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 (no event to await: the emulator runs on its own loop)
            await asyncio.sleep(0.02)


Factory = Callable[..., Any]


@contextlib.asynccontextmanager
async def _open_page(backend: str) -> AsyncIterator[tuple[Any, Any, Any]]:
    """A new page (in its own context) of a browser that a ``Harvester`` launched, with the browser process and
    the identity the page presents; the page is closed after."""
    async with Harvester(backend) as harvester:
        process, driver, identity = await harvester._ensure_browser(lambda _: None)
        page = await driver.new_page(identity=identity)
        try:
            yield process, identity, page
        finally:
            await page.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_page_presents_a_consistent_non_headless_identity(emulator: Any, backend: str) -> None:
    """Inside the page the UA has no Headless, webdriver is false, and the brands are the recorded ones."""
    async with _open_page(backend) as (_process, identity, page):
        await page.goto(emulator.url + "/static/img/none.png")
        # goto returns at commit: a script that starts just then may still run in the blank document, which
        # the image's replaces under it; read again once the image's own document is up (as the harvester does).
        async with asyncio.timeout(20):
            while True:
                try:
                    seen = await page.evaluate(
                        "(async () => ({ua: navigator.userAgent, webdriver: navigator.webdriver,"
                        ' brands: navigator.userAgentData.brands.map(b => `"${b.brand}";v="${b.version}"`)'
                        ".join(', '), platform: navigator.userAgentData.platform}))()"
                    )
                    break
                except Exception as exc:
                    if not _is_page_churn(exc):
                        raise
                    await page.wait_for_change(0.1)
    assert "Headless" not in seen["ua"] and seen["ua"] == identity.user_agent
    assert seen["webdriver"] is False
    assert seen["brands"] == identity.headers()["sec-ch-ua"]
    assert seen["platform"] == "Linux"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_page_wakes_when_a_response_sets_the_clearance(emulator: Any, backend: str) -> None:
    """A page notes (and wakes its waiter on) the response that sets cf_clearance, before the page reloads."""
    async with _open_page(backend) as (_process, _identity, page):
        await page.goto(emulator.url + "/")
        await _until_cleared(page)
        assert emulator.stats["clearances_issued"] == 1


@pytest.mark.parametrize("backend", BACKENDS)
async def test_one_browser_serves_many_harvests_each_in_its_own_context(emulator: Any, backend: str) -> None:
    """Concurrent harvests share one browser but not cookies: each clears its own challenge."""
    async with Harvester(backend, max_concurrent=2) as harvester:
        records = await asyncio.gather(
            harvester.harvest("cloudflare", base_url=emulator.url),
            harvester.harvest("cerebras", base_url=emulator.url),
            harvester.harvest("freenetfly", base_url=emulator.url),
        )
        assert harvester.browser_launches == 1 and harvester.browser_running
    assert not harvester.browser_running
    assert emulator.stats["clearances_issued"] == 3
    assert [r.provider for r in records] == ["cloudflare", "cerebras", "freenetfly"]
    assert records[1].api_key and records[1].api_key.startswith("csk-")
    assert len({r.cookie_dict()["cf_clearance"] for r in records}) == 3
    assert emulator.stats["clearance_user_agent"] == records[0].user_agent


@pytest.mark.parametrize("backend", BACKENDS)
async def test_spare_tab_is_a_fresh_context_taken_by_the_next_harvest(emulator: Any, backend: str) -> None:
    """With a spare tab, one blank tab with an empty cookie jar waits between harvests, and the next one uses it."""
    async with Harvester(backend, spare_tabs=1) as harvester:
        first = await harvester.harvest("cloudflare", base_url=emulator.url)
        assert len(harvester._browser._spares) == 1
        spare = await harvester._browser._spares[0]
        assert spare.is_open() and await spare.cookies() == []
        second = await harvester.harvest("cloudflare", base_url=emulator.url)
        await until(lambda: not spare.is_open())  # the second harvest ran in it, and closes it once done
        assert len(harvester._browser._spares) == 1 and (await harvester._browser._spares[0]) is not spare
    assert first.cookie_dict()["cf_clearance"] != second.cookie_dict()["cf_clearance"]
    assert emulator.stats["clearances_issued"] == 2


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_harvest_returns_first_and_then_disposes_of_its_context(emulator: Any, backend: str) -> None:
    """The record comes back while the page's context is still being disposed of; it is gone soon after."""
    import aiohttp

    async with Harvester(backend) as harvester:
        record = await harvester.harvest("cloudflare", base_url=emulator.url)
        closing = list(harvester._browser._closing)
        assert closing and not any(task.done() for task in closing)  # not waited for
        await asyncio.wait(closing, timeout=20)
        assert not harvester._browser._closing
        process = harvester._browser.process
        assert process is not None
        async with aiohttp.ClientSession() as session, session.ws_connect(process.endpoint) as ws:
            await ws.send_json({"id": 1, "method": "Target.getBrowserContexts"})
            reply = await ws.receive_json(timeout=10)
        assert reply["result"]["browserContextIds"] == []
    assert record.cookie_dict()["cf_clearance"]


async def test_tabs_opened_at_start_serve_the_harvests_and_are_closed_with_the_browser(emulator: Any) -> None:
    """Tabs opened by start(tabs=N) are taken by concurrent harvests; one left over goes with the browser."""
    async with Harvester(max_concurrent=2) as harvester:
        await harvester.start(tabs=3)
        opened = list(harvester._browser._spares)
        records = await asyncio.gather(
            harvester.harvest("cloudflare", base_url=emulator.url),
            harvester.harvest("cerebras", base_url=emulator.url),
        )
        assert [task for task in opened if task not in harvester._browser._spares] == opened[:2]
        assert harvester.browser_launches == 1
    assert all(r.cookie_dict()["cf_clearance"] for r in records)
    assert not harvester._browser._spares  # (the fixture checks that no process or profile is left)


async def test_dead_browser_is_replaced_and_counted(emulator: Any) -> None:
    """If Chromium dies between harvests, the next harvest launches a new one and counts the restart."""
    async with Harvester() as harvester:
        await harvester.harvest("cloudflare", base_url=emulator.url)
        assert harvester._browser.process is not None and harvester._browser.process.pid is not None
        os.killpg(harvester._browser.process.pid, signal.SIGKILL)
        await until(lambda: not harvester.browser_running)
        record = await harvester.harvest("cloudflare", base_url=emulator.url)
        assert harvester.browser_restarts == 1 and harvester.browser_launches == 2
    assert record.cookie_dict()["cf_clearance"]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_browser_killed_mid_harvest_is_a_browser_error(emulator_factory: Factory, backend: str) -> None:
    """Killing Chromium while a challenge runs ends the harvest with BrowserError, not a hang."""
    emu = emulator_factory(think_ms=10_000)
    async with Harvester(backend, timeout=20) as harvester:
        task = asyncio.create_task(harvester.harvest("cloudflare", base_url=emu.url))
        await until(lambda: emu.stats["challenge_pages"] > 0)
        assert harvester._browser.process is not None and harvester._browser.process.pid is not None
        os.killpg(harvester._browser.process.pid, signal.SIGKILL)
        with pytest.raises(BrowserError) as info:
            await asyncio.wait_for(task, 10)
    assert info.value.provider == "cloudflare"


async def test_cancelled_harvest_tears_everything_down(emulator_factory: Factory) -> None:
    """Cancelling a harvest mid-challenge closes the tab, the browser and the profile."""
    emu = emulator_factory(think_ms=10_000)
    harvester = Harvester()
    task = asyncio.create_task(harvester.harvest("cloudflare", base_url=emu.url))
    await until(lambda: emu.stats["challenge_pages"] > 0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await harvester.close()
    assert not harvester.browser_running
    with pytest.raises(RuntimeError):
        await harvester.harvest("cloudflare", base_url=emu.url)


async def test_login_required_needs_headful(emulator_factory: Factory) -> None:
    """An empty Cerebras session means a login: NeedsHeadfulError with the --headful hint."""
    emu = emulator_factory(variant="login-required", think_ms=50)
    async with Harvester() as harvester:
        with pytest.raises(NeedsHeadfulError) as info:
            await harvester.harvest("cerebras", base_url=emu.url)
    assert info.value.reason == "login"
    assert "harvest --provider cerebras --headful" in str(info.value)


async def test_single_flight_in_process(emulator: Any) -> None:
    """Two concurrent harvest() calls of one provider run one browser; the second reuses the record."""
    cache = AuthCache.open()
    first, second = await asyncio.gather(
        harvest("cerebras", base_url=emulator.url, cache=cache),
        harvest("cerebras", base_url=emulator.url, cache=cache),
    )
    assert emulator.stats["clearances_issued"] == 1
    assert first.api_key == second.api_key
    stored = cache.get("cerebras")
    assert stored is not None and stored.api_key == first.api_key


async def test_force_harvests_again(emulator: Any) -> None:
    """A fresh cached record is not reused by a later call, and force always runs the browser."""
    cache = AuthCache.open()
    async with Harvester() as harvester:
        await harvest("freenetfly", base_url=emulator.url, cache=cache, harvester=harvester)
        await harvest("freenetfly", base_url=emulator.url, cache=cache, harvester=harvester, force=True)
    assert emulator.stats["clearances_issued"] == 2


async def test_twenty_harvests_leak_nothing(emulator_factory: Factory) -> None:
    """20 one-shot harvests in a row, a third of them failing, leave no process and no profile."""
    good = emulator_factory(think_ms=20)
    blocked = emulator_factory(variant="blocked")
    slow = emulator_factory(think_ms=10_000)
    cache = AuthCache.open()
    outcomes: list[str] = []
    for i in range(20):
        # The slow one's page answers (a challenge that never clears): its deadline must leave time for that
        # first answer on a loaded machine, or it would rightly end as "no answer".
        target, timeout = [(good, 10.0), (blocked, 10.0), (good, 10.0), (slow, 2.0)][i % 4]
        try:
            await harvest("cloudflare", base_url=target.url, cache=cache, timeout=timeout, force=True)
            outcomes.append("ok")
        except HarvestError as exc:
            outcomes.append(type(exc).__name__)
    assert outcomes.count("ok") == 10
    assert outcomes.count("BlockedError") == 5 and outcomes.count("ChallengeTimeout") == 5


async def test_challenge_timeout_respects_the_deadline(emulator_factory: Factory) -> None:
    """A challenge that never clears raises ChallengeTimeout close to the deadline."""
    emu = emulator_factory(think_ms=60_000)
    loop = asyncio.get_running_loop()
    loading: list[float] = []  # the harvest's clock starts with the page

    def step(text: str) -> None:
        if text.startswith("loading "):
            loading.append(loop.time())

    async with Harvester(timeout=1.5) as harvester:
        await harvester._ensure_browser(lambda _: None)
        with pytest.raises(ChallengeTimeout) as info:
            await harvester.harvest("deepinfra", base_url=emu.url, on_step=step)
        elapsed = loop.time() - loading[0]
    assert 1.4 <= elapsed < 3.0
    assert info.value.timeout == 1.5


def test_make_driver_rejects_unknown_backends() -> None:
    """Only nodriver and playwright are backends."""
    with pytest.raises(ValueError, match="backend"):
        make_driver("selenium")


def test_identity_matches_real_version() -> None:
    """The static GREASE algorithm gives Chromium 156's brands (also checked live above)."""
    identity = build_identity("", "Chrome/156.0.8078.79")
    assert identity.brands == (("Not:A-Brand", "8"), ("Chromium", "156"))


async def test_long_tmpdir_still_launches_and_cleans_up(
    emulator: Any, no_leftovers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a $TMPDIR too long for Chromium's socket path, the profile goes to /tmp and is still deleted."""
    import tempfile

    from harvester._browser import PROFILE_PREFIX

    deep = Path(no_leftovers) / ("d" * 60) / ("e" * 40)
    deep.mkdir(parents=True)
    monkeypatch.setenv("TMPDIR", str(deep))
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    profile = await _profile_of_a_browser_run()
    assert profile.parent == Path("/tmp") and profile.name.startswith(PROFILE_PREFIX)
    # (The fixture checks that no Chromium of this test survives; other sessions may use /tmp too.)
    assert not await asyncio.to_thread(profile.exists)


async def _profile_of_a_browser_run() -> Path:
    """Start a browser, check that it answers, stop it; return where its profile was."""
    from harvester._browser import BrowserProcess, find_browser

    process = BrowserProcess(find_browser())
    try:
        await process.start()
        assert process.profile_dir is not None
        profile = Path(process.profile_dir)
        assert process.alive and process.endpoint.startswith("ws://")
    finally:
        await process.stop()
    return profile


async def test_without_tmpdir_the_profile_lives_in_ram_and_is_deleted(
    no_leftovers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With $TMPDIR unset the profile goes to /dev/shm (no disk writes to sync, nor to delete), then away."""
    from harvester import _launch
    from harvester._browser import PROFILE_PREFIX

    if not _launch._roomy(_launch._RAM_TMP):
        pytest.fail("this test needs a writable /dev/shm with 256 MB free")
    monkeypatch.delenv("TMPDIR")
    profile = await _profile_of_a_browser_run()
    assert profile.parent == Path("/dev/shm") and profile.name.startswith(PROFILE_PREFIX)
    assert not await asyncio.to_thread(profile.exists)


@pytest.mark.parametrize("nice", [0, 7])
async def test_a_niced_browser_keeps_every_thread_at_that_niceness(no_leftovers: Any, nice: int) -> None:
    """BrowserProcess(nice=N) runs every Chromium process and thread N steps nicer than us: Chromium cannot undo it.

    (Run as root, Chromium would raise its IO, compositor and GPU threads to -8 and reset others to 0.)
    """
    from harvester._browser import BrowserProcess, find_browser

    want = min(os.getpriority(os.PRIO_PROCESS, 0) + nice, 19)
    process = BrowserProcess(find_browser(), nice=nice)
    try:
        await process.start()
        assert process.pid is not None
        await asyncio.sleep(1.0)  # its helpers are up and have set their threads' kinds
        threads = _thread_nices(process.pid)
        assert len({pid for pid, _ in threads}) >= 3  # the browser, a zygote, the GPU or a renderer process
        assert {nice for _, nice in threads} == {want}, threads
    finally:
        await process.stop()


def _family(root: int) -> list[int]:
    """``root`` and every process under it (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    family, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        family += frontier
    return family


def _thread_nices(root: int) -> list[tuple[int, int]]:
    """(pid, niceness) of every thread of every process under ``root`` (from /proc), ``root`` included."""
    found = []
    for pid in _family(root):
        for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
            try:
                found.append((pid, int(stat.read_text().rsplit(")", 1)[1].split()[16])))
            except (OSError, IndexError):
                continue  # it exited meanwhile
    return found


def _renderers(browser_pid: int) -> list[int]:
    """The renderer processes under this browser (its zygotes' children), from /proc."""
    found = []
    for pid in _family(browser_pid)[1:]:
        try:
            if b"--type=renderer" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue  # it exited meanwhile
    return found


async def _until_cleared(page: Any) -> None:
    """Wait (20 s at most) until a response has set the page's cf_clearance cookie."""
    async with asyncio.timeout(20):
        while page.cookie_set_at("cf_clearance") is None:
            await page.wait_for_change(5.0)


async def _snapshot_of(page: Any, url: str) -> Any:
    """The page's snapshot once its loaded document is the one at ``url`` and no challenge (20 s at most)."""
    async with asyncio.timeout(20):
        while True:
            try:
                state = await snapshot(page)
            except Exception as exc:
                if not _is_page_churn(exc):
                    raise
            else:
                if state.url == url and state.ready_state == "complete" and classify(state) != "challenge":
                    return state
            await page.wait_for_change(0.1)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_harvest_context_costs_one_renderer_and_no_webui_pages(emulator: Any, backend: str) -> None:
    """A cleared tab is the browser's only renderer: no spare renderer and no omnibox WebUI pages per context."""
    import aiohttp

    async with _open_page(backend) as (process, _identity, page):
        await page.goto(emulator.url + "/")
        await _until_cleared(page)
        # The spare renderer is started once a navigation commits: wait for the reloaded page's load.
        assert (await _snapshot_of(page, emulator.url + "/")).title == "Playground"
        async with aiohttp.ClientSession() as session, session.ws_connect(process.endpoint) as ws:
            await ws.send_json({"id": 1, "method": "Target.getTargets"})
            reply = await ws.receive_json(timeout=10)
        kinds = sorted(f"{t['type']} {t['url']}" for t in reply["result"]["targetInfos"])
        assert not [k for k in kinds if k.startswith("browser_ui") or "omnibox" in k], kinds
        assert process.pid is not None
        assert len(_renderers(process.pid)) == 1, kinds


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_snapshot_has_the_documents_own_status_and_headers(emulator: Any, backend: str) -> None:
    """A snapshot carries the main document's response status and headers as the browser received them."""
    async with _open_page(backend) as (_process, _identity, page):
        await page.goto(emulator.url + "/")
        await _until_cleared(page)
        cleared = await _snapshot_of(page, emulator.url + "/")
        await page.goto(emulator.url + "/no/such/page")
        missing = await _snapshot_of(page, emulator.url + "/no/such/page")
    assert cleared.status == 200 and cleared.headers is not None
    assert cleared.headers["server"] == "cloudflare" and cleared.headers["content-type"].startswith("text/html")
    assert "cf-mitigated" not in cleared.headers  # the cleared page's own response, not the challenge's
    assert missing.status == 404 and missing.headers is not None and missing.headers["server"] == "cloudflare"
    assert missing.headers["cf-ray"] != cleared.headers["cf-ray"]  # each document's own response
