"""Chromium's headless shell (``chromium-headless-shell``), the faster browser a user may name instead of Chromium:
real harvests with both backends, the CLI, and what it cannot do (``--headful``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cache import AuthCache
from harvester import BrowserError, Harvester, harvest
from harvester._launch import browser_args, find_headless_shell, is_headless_shell
from harvester.cli import _exit

from .conftest import run_harvest


@pytest.fixture
def shell(monkeypatch: pytest.MonkeyPatch) -> str:
    """The headless shell, named by ``$HARVEST_BROWSER`` as a user would."""
    path = find_headless_shell()
    if path is None:
        pytest.fail(
            "chromium-headless-shell is not installed (scripts/test installs it: apt-get install chromium-headless-shell)"
        )
    monkeypatch.setenv("HARVEST_BROWSER", path)
    return path


def test_headless_shells_are_told_from_chromium_by_name() -> None:
    """Debian's and Chrome for Testing's shells are shells; Chromium and Chrome are not, and get --headless=new."""
    assert is_headless_shell("/usr/lib/chromium/chromium-headless-shell")
    assert is_headless_shell("/opt/chrome-headless-shell-linux64/chrome-headless-shell")
    assert not is_headless_shell("/usr/lib/chromium/chromium")
    assert not is_headless_shell("/usr/bin/google-chrome")
    assert "--headless=new" in browser_args("/tmp/p", headful=False)
    assert "--headless=new" not in browser_args("/tmp/p", headful=False, shell=True)


@pytest.mark.parametrize("backend", ["nodriver", "playwright"])
async def test_a_harvest_with_the_shell_clears_and_presents_chromes_identity(
    emulator: Any, shell: str, backend: str
) -> None:
    """The shell clears the challenge with either backend, and its record carries Chrome's reduced UA (the shell's own
    says HeadlessChrome and the full version) with the client hints of its version."""
    async with Harvester(backend) as harvester:
        record = await harvest("cloudflare", base_url=emulator.url, harvester=harvester, cache=AuthCache.open())
        assert harvester._browser.process is not None and harvester._browser.process.executable == shell
    assert record.cookie_dict().get("cf_clearance")
    assert "Headless" not in record.user_agent
    major = record.user_agent.split("Chrome/", 1)[1].split(".", 1)[0]
    assert f"Chrome/{major}.0.0.0 " in record.user_agent
    assert f'"Chromium";v="{major}"' in record.headers["sec-ch-ua"]
    # (the autouse fixture checks that no shell process or profile is left)


def test_the_cli_harvests_every_provider_at_once_with_the_shell(
    emulator: Any, harvest_env: dict[str, str], shell: str
) -> None:
    """`harvest --all` with `[browser] path` naming the shell: every provider in one shell, one tab each."""
    config = Path(harvest_env["HARVEST_CONFIG"])
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[browser]\npath = "{shell}"\n')
    env = {k: v for k, v in harvest_env.items() if k != "HARVEST_BROWSER"}
    out = run_harvest(env, "--all", "--base-url", emulator.url)
    assert out.returncode == _exit.OK, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 4 and all("cookies" in line for line in lines), out.stdout


async def test_headful_with_the_shell_is_refused_before_anything_starts(
    emulator: Any, shell: str, no_leftovers: Path
) -> None:
    """The shell has no window: --headful with it is a BrowserError that says so, before any browser starts."""
    with pytest.raises(BrowserError) as info:
        await harvest("cloudflare", base_url=emulator.url, headful=True, cache=AuthCache.open())
    assert "headless shell, which has none" in str(info.value) and "[browser] path" in str(info.value)
    assert emulator.stats["challenge_pages"] == 0


def test_headful_with_the_shell_exits_with_one_line(harvest_env: dict[str, str], shell: str) -> None:
    """On the command line the same refusal is one line and the browser-failure exit code, no traceback."""
    env = {**harvest_env, "HARVEST_BROWSER": shell}
    out = run_harvest(env, "--provider", "cloudflare", "--headful", "--base-url", "http://127.0.0.1:9", timeout=60)
    assert out.returncode == _exit.BROWSER_FAILED, out.stderr
    assert "headless shell" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
