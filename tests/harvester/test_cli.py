"""`harvest --provider NAME` end to end: a real `harvest` process, real Chromium, the emulator."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harvester.cli import _exit

from .conftest import browser_children, harvest_cmd, wait_for
from .conftest import run_harvest as run

Factory = Callable[..., Any]


def cached(env: dict[str, str], name: str) -> dict[str, Any]:
    """`harvest cache get NAME --json`, parsed."""
    out = run(env, "cache", "get", name, "--json")
    assert out.returncode == 0, out.stderr
    data: dict[str, Any] = json.loads(out.stdout)
    return data


@pytest.mark.parametrize("backend", ["nodriver", "playwright"])
def test_every_provider_end_to_end(emulator: Any, harvest_env: dict[str, str], backend: str) -> None:
    """`harvest --all` fills the cache with each provider's cookies, key and a non-headless UA."""
    out = run(harvest_env, "--all", "--base-url", emulator.url, "--backend", backend)
    assert out.returncode == _exit.OK, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["cerebras", "cloudflare", "deepinfra", "freenetfly"]
    for name in ("cerebras", "cloudflare", "deepinfra", "freenetfly"):
        record = cached(harvest_env, name)
        cookies = {c["name"]: c for c in record["cookies"]}
        assert cookies["cf_clearance"]["http_only"] is True
        assert cookies["cf_clearance"]["value"] not in out.stdout + out.stderr  # the summary has no secrets
        assert "Headless" not in record["user_agent"] and "Chrome/" in record["user_agent"]
        assert record["headers"]["sec-ch-ua-platform"] == '"Linux"'
        assert record["origin"] == emulator.url and record["browser"].startswith("Chromium/")
        assert record["extras"]["backend"] == backend
    assert cached(harvest_env, "cerebras")["api_key"].startswith("csk-")
    assert cached(harvest_env, "deepinfra")["headers"]["x-deepinfra-source"] == "web-embed"
    assert emulator.stats["clearances_issued"] == 4


def test_blocked_exits_5(emulator_factory: Factory, harvest_env: dict[str, str]) -> None:
    """An "Access denied" page exits 5 and says what to try."""
    emu = emulator_factory(variant="blocked")
    out = run(harvest_env, "--provider", "cloudflare", "--base-url", emu.url)
    assert out.returncode == _exit.BLOCKED
    assert "Access denied" in out.stderr and "--proxy" in out.stderr


def test_interactive_exits_7_with_headful_hint(emulator_factory: Factory, harvest_env: dict[str, str]) -> None:
    """A Turnstile-style challenge exits 7 and tells the user to run once with --headful."""
    emu = emulator_factory(variant="interactive")
    out = run(harvest_env, "--provider", "deepinfra", "--base-url", emu.url)
    assert out.returncode == _exit.NEEDS_HEADFUL
    assert "harvest --provider deepinfra --headful" in out.stderr
    assert emu.stats["clearances_issued"] == 0


def test_never_clearing_challenge_exits_4_within_the_deadline(
    emulator_factory: Factory, harvest_env: dict[str, str]
) -> None:
    """A challenge slower than --timeout exits 4 soon after the deadline (which starts with the page: the
    launch has its own)."""
    emu = emulator_factory(think_ms=60_000)
    loading = None
    lines = []
    with subprocess.Popen(
        harvest_cmd("--provider", "cloudflare", "--base-url", emu.url, "--timeout", "2", "-v"),
        env=harvest_env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.append(line)
                if loading is None and ": loading " in line:
                    loading = time.monotonic()
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)
    err = "".join(lines)
    assert proc.returncode == _exit.CHALLENGE_TIMEOUT, err
    assert loading is not None and time.monotonic() - loading < 2 + 4  # the deadline, then teardown under load
    assert "did not clear within 2 s" in err


def test_unknown_provider_exits_2_listing_known(harvest_env: dict[str, str]) -> None:
    """An unknown provider exits 2 and lists the known ones."""
    out = run(harvest_env, "--provider", "nope")
    assert out.returncode == _exit.USAGE
    assert "cerebras, cloudflare, deepinfra, freenetfly" in out.stderr


def _start_slow_harvest(emu: Any, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        harvest_cmd("--provider", "cloudflare", "--base-url", emu.url, "--timeout", "60"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert wait_for(lambda: emu.stats["challenge_pages"] > 0, timeout=30), "the browser never reached the page"
    return proc


def test_chromium_killed_mid_harvest_exits_6(emulator_factory: Factory, harvest_env: dict[str, str]) -> None:
    """Killing Chromium mid-challenge gives a clean browser error (exit 6), not a hang or a traceback."""
    emu = emulator_factory(think_ms=60_000)
    proc = _start_slow_harvest(emu, harvest_env)
    browsers = browser_children(proc.pid)
    assert browsers
    for pid in browsers:
        subprocess.run(["kill", "-9", str(pid)], check=False)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == _exit.BROWSER_FAILED, stderr
    assert "Traceback" not in stderr and "Chromium" in stderr


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_cleanly(emulator_factory: Factory, harvest_env: dict[str, str], sig: int, code: int) -> None:
    """SIGINT or SIGTERM mid-harvest exits 130 / 143 after closing the browser (no leftovers)."""
    emu = emulator_factory(think_ms=60_000)
    proc = _start_slow_harvest(emu, harvest_env)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr


def test_two_processes_make_one_browser_run(emulator_factory: Factory, harvest_env: dict[str, str]) -> None:
    """Two `harvest --provider X` at once: one clears the challenge, the other reuses its record."""
    emu = emulator_factory(think_ms=500)
    args = harvest_cmd("--provider", "cerebras", "--base-url", emu.url)
    procs = [subprocess.Popen(args, env=harvest_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    time.sleep(0.1)
    procs.append(subprocess.Popen(args, env=harvest_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, stderr = proc.communicate(timeout=90)
        assert proc.returncode == 0, stderr
    assert emu.stats["clearances_issued"] == 1
    assert cached(harvest_env, "cerebras")["api_key"].startswith("csk-")


def test_all_providers_harvest_concurrently_in_one_browser(
    emulator_factory: Factory, harvest_env: dict[str, str]
) -> None:
    """`harvest --all` has every provider's challenge open at once (one tab each), in one browser."""
    emu = emulator_factory(think_ms=8000)
    proc = subprocess.Popen(
        harvest_cmd("--all", "--base-url", emu.url, "-v"),
        env=harvest_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Four challenge pages served before the first clearance: the harvests overlap.
        assert wait_for(lambda: emu.stats["challenge_pages"] >= 4, 60)
        assert emu.stats["clearances_issued"] == 0
        assert len(_main_browsers(browser_children(proc.pid))) == 1
        out, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.terminate()  # not kill: its teardown removes the browser and the profile
            proc.wait(30)
    assert proc.returncode == _exit.OK, err
    assert [line.split(":")[0] for line in out.splitlines()] == ["cerebras", "cloudflare", "deepinfra", "freenetfly"]
    assert err.count("launching Chromium") == 1
    assert "cerebras: " in err and " · challenge " in err  # the per-phase breakdown of -v


def test_one_failure_does_not_stop_the_others_and_the_worst_code_wins(
    emulator_factory: Factory, harvest_env: dict[str, str]
) -> None:
    """Targets run side by side: the good ones print their line in order, each failure its error, and the
    exit code is the worst of them."""
    good, blocked = emulator_factory(think_ms=20), emulator_factory(variant="blocked")
    env = {
        **harvest_env,
        "HARVEST_CLOUDFLARE_BASE_URL": blocked.url,
        "HARVEST_CEREBRAS_BASE_URL": good.url,
        "HARVEST_FREENETFLY_BASE_URL": good.url,
    }
    refused = f"http://127.0.0.1:{_free_port()}/"
    out = run(
        env,
        "--provider",
        "cerebras",
        "--provider",
        "cloudflare",
        "--provider",
        "freenetfly",
        "--url",
        refused,
        "--timeout",
        "15",
    )
    assert [line.split(":")[0] for line in out.stdout.splitlines()] == ["cerebras", "freenetfly"]
    assert "cloudflare: " in out.stderr and "Access denied" in out.stderr
    assert f"cannot reach {refused}: connection refused" in out.stderr
    assert out.returncode == _exit.SITE_UNREACHABLE  # 9 (unreachable) is worse than 5 (blocked)


def _main_browsers(pids: list[int]) -> list[int]:
    """The browser processes among ``pids`` (not the crash handlers, which are our children too)."""
    return [pid for pid in pids if not Path(f"/proc/{pid}/comm").read_text().startswith("chrome_crashpad")]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize(
    ("args", "early"),
    [
        (["--provider", "cerebras"], True),
        (["--all", "-v"], True),
        (["--url=https://example.com", "--name", "ex"], True),
        (["--name", "cache", "--provider", "cerebras"], True),  # an option's value is no subcommand
        (["--provider", "cerebras", "--headful"], False),  # a visible browser checks for a display first
        (["--help"], False),
        (["cache", "list"], False),
        (["chat", "--provider", "cerebras"], False),  # a subcommand's own --provider
        (["daemon"], False),
        ([], False),
    ],
)
def test_which_command_lines_start_chromium_before_the_imports(args: list[str], early: bool) -> None:
    """Only the root command harvesting (`--provider`, `--all`, `--url`) starts Chromium before its imports."""
    from harvester._entry import _is_oneshot_harvest

    assert _is_oneshot_harvest(args) is early


def test_the_chromium_the_config_names_runs_and_is_cleaned_up(
    emulator: Any, harvest_env: dict[str, str], no_leftovers: Path
) -> None:
    """With `[browser] path` naming another Chromium, that one harvests (started before the imports) and nothing is
    left behind."""
    from harvester._browser import find_browser

    other = no_leftovers / "configured-chromium"
    other.symlink_to(find_browser())
    config = Path(harvest_env["HARVEST_CONFIG"])
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[browser]\npath = "{other}"\n')
    out = run(harvest_env, "--provider", "cloudflare", "--base-url", emulator.url)
    assert out.returncode == _exit.OK, out.stderr
    assert emulator.stats["clearances_issued"] == 1  # (the fixture checks that no Chromium or profile is left)


def test_usage_error_after_the_early_launch_leaves_nothing(harvest_env: dict[str, str]) -> None:
    """A command line that fails its checks after Chromium started early exits 2 and stops that Chromium."""
    out = run(harvest_env, "--provider", "cerebras", "--timeout", "-1")
    assert out.returncode == _exit.USAGE and "--timeout must be positive" in out.stderr
    # (the fixture checks that no Chromium process or profile is left)
