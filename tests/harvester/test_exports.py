"""Exports loaded as they are by the tools that read them: curl, wget, http.cookiejar, Playwright (issue 14).

One real harvest of the emulator (real Chromium) per module; every consumer then reaches the app page with the
exported session, and the emulator counts no new challenge page.
"""

from __future__ import annotations

import http.cookiejar
import os
import shutil
import stat
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from harvester.cli import _exit
from tests.emulator._server import EmulatorThread

from .conftest import HARVEST

APP_PAGE = "<title>Playground</title>"
CHALLENGE = "Just a moment"


class Session:
    """The module's harvested session: its emulator, environment and scratch directory."""

    def __init__(self, emulator: EmulatorThread, env: dict[str, str], home: Path) -> None:
        self.emulator, self.env, self.home = emulator, env, home

    def harvest(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `harvest ARGS` with the session's cache."""
        result = subprocess.run([HARVEST, *args], env=self.env, capture_output=True, text=True, timeout=120)
        if check:
            assert result.returncode == 0, result.stderr
        return result

    def bash(self, script: str) -> subprocess.CompletedProcess[str]:
        """Run a bash script (process substitution and all) with the session's environment."""
        env = {**self.env, "URL": self.emulator.url, "PATH": f"{Path(HARVEST).parent}:{self.env['PATH']}"}
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env=env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def record(self) -> dict[str, Any]:
        """The harvested record, as `cache get --json` prints it."""
        data: dict[str, Any] = orjson.loads(self.harvest("cache", "get", "cerebras", "--json").stdout)
        return data

    def challenges(self) -> int:
        """Challenge pages the emulator has served so far."""
        return int(self.emulator.stats["challenge_pages"])


@pytest.fixture(scope="module")
def session() -> Iterator[Session]:
    """A cerebras session harvested from the emulator by real Chromium into a private cache."""
    home = Path(tempfile.mkdtemp(prefix="hx-", dir="/tmp"))
    env = dict(os.environ)
    for name in ("HARVEST_CACHE_KEY", "HARVEST_CACHE_PASSPHRASE"):
        env.pop(name, None)
    env.update(
        HARVEST_CACHE=str(home / "data" / "sessions.cache"),
        HARVEST_CACHE_KEY_FILE=str(home / "config" / "cache.key"),
        HARVEST_CONFIG=str(home / "config" / "config.toml"),
        TMPDIR=str(home),
    )
    with EmulatorThread() as emulator:
        s = Session(emulator, env, home)
        s.harvest("--provider", "cerebras", "--base-url", emulator.url)
        yield s
    shutil.rmtree(home, ignore_errors=True)


def test_curl_reads_the_curl_config(session: Session) -> None:
    """`curl -K <(harvest cache get cerebras --format curl) URL` gets the app page, not the challenge."""
    before = session.challenges()
    out = session.bash('curl -sS -K <(harvest cache get cerebras --format curl) "$URL/"')
    assert out.returncode == 0, out.stderr
    assert APP_PAGE in out.stdout and CHALLENGE not in out.stdout
    assert session.challenges() == before


def test_curl_and_wget_read_cookies_txt(session: Session) -> None:
    """curl -b and wget --load-cookies, each with the record's user agent, get the app page."""
    before = session.challenges()
    script = (
        "harvest cache get cerebras --format cookies.txt > cookies.txt\n"
        'eval "$(harvest cache get cerebras --format env)"\n'
        'curl -sS -b cookies.txt -A "$HARVEST_CEREBRAS_USER_AGENT" "$URL/" > curl.html\n'
        'wget -q -O wget.html --load-cookies cookies.txt --user-agent "$HARVEST_CEREBRAS_USER_AGENT" "$URL/"\n'
    )
    out = session.bash(script)
    assert out.returncode == 0, out.stderr
    for name in ("curl.html", "wget.html"):
        page = (session.home / name).read_text()
        assert APP_PAGE in page and CHALLENGE not in page, name
    assert session.challenges() == before


def test_mozilla_cookie_jar_reads_cookies_txt(session: Session) -> None:
    """http.cookiejar.MozillaCookieJar loads cookies.txt and urllib, with the user agent, gets the app page."""
    path = session.home / "jar.txt"
    path.write_text(session.harvest("cache", "get", "cerebras", "--format", "cookies.txt").stdout)
    jar = http.cookiejar.MozillaCookieJar(str(path))
    jar.load(ignore_discard=True, ignore_expires=False)
    assert {c.name for c in jar} >= {"cf_clearance"}
    before = session.challenges()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    request = urllib.request.Request(session.emulator.url + "/", headers={"User-Agent": session.record()["user_agent"]})
    with opener.open(request, timeout=30) as response:
        page = response.read().decode()
    assert APP_PAGE in page and session.challenges() == before


async def test_playwright_storage_state_opens_the_app(session: Session) -> None:
    """A fresh Playwright context from --format storage-state lands on the app page, with no challenge run."""
    from playwright.async_api import async_playwright

    from harvester._browser import BrowserProcess, find_browser

    state = orjson.loads(session.harvest("cache", "get", "cerebras", "--format", "storage-state").stdout)
    user_agent = session.record()["user_agent"]
    before = session.challenges()
    # Playwright's own browser download does not work here: attach to a Chromium we launch, as the harvester does.
    async with BrowserProcess(find_browser()) as process, async_playwright() as playwright:
        browser = await playwright.chromium.connect_over_cdp(process.endpoint)
        try:
            context = await browser.new_context(storage_state=state, user_agent=user_agent)
            page = await context.new_page()
            await page.goto(session.emulator.url + "/")
            title = await page.title()
            await context.close()
        finally:
            await browser.close()
    assert title == "Playground"
    assert session.challenges() == before


# -- readers written from the formats' published descriptions ----------------------------------------------

_COOKIE_EXTENSION_KEYS = {
    "domain": str,
    "hostOnly": bool,
    "httpOnly": bool,
    "name": str,
    "path": str,
    "sameSite": str,
    "secure": bool,
    "session": bool,
    "storeId": str,
    "value": str,
}


def read_cookies_json(text: str) -> dict[str, dict[str, Any]]:
    """Read an EditThisCookie / Cookie-Editor list (chrome.cookies.Cookie fields) into cookies by name."""
    cookies = {}
    for entry in orjson.loads(text):
        for key, kind in _COOKIE_EXTENSION_KEYS.items():
            assert isinstance(entry[key], kind), key
        assert entry["sameSite"] in ("no_restriction", "lax", "strict", "unspecified")
        assert entry["hostOnly"] == (not entry["domain"].startswith("."))
        if entry["session"]:
            assert "expirationDate" not in entry
        else:
            assert isinstance(entry["expirationDate"], int | float)
        cookies[entry["name"]] = entry
    return cookies


def read_har(text: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """Read a HAR 1.2 log (the spec's required keys and types); return the first request's URL, headers, cookies."""
    log = orjson.loads(text)["log"]
    assert log["version"] == "1.2" and isinstance(log["creator"]["name"], str)
    assert isinstance(log["creator"]["version"], str) and isinstance(log["entries"], list)
    entry = log["entries"][0]
    assert isinstance(entry["startedDateTime"], str) and isinstance(entry["time"], int | float)
    from datetime import datetime

    datetime.fromisoformat(entry["startedDateTime"])
    request, response = entry["request"], entry["response"]
    for key, kind in (("method", str), ("url", str), ("httpVersion", str), ("cookies", list), ("headers", list)):
        assert isinstance(request[key], kind), key
    for key in ("queryString",):
        assert isinstance(request[key], list)
    assert isinstance(request["headersSize"], int) and isinstance(request["bodySize"], int)
    assert isinstance(response["status"], int) and isinstance(response["statusText"], str)
    assert isinstance(response["content"]["size"], int) and isinstance(response["content"]["mimeType"], str)
    assert isinstance(response["redirectURL"], str) and isinstance(entry["cache"], dict)
    for key in ("send", "wait", "receive"):
        assert isinstance(entry["timings"][key], int | float)
    for cookie in request["cookies"]:
        assert isinstance(cookie["name"], str) and isinstance(cookie["value"], str)
        if "expires" in cookie:
            datetime.fromisoformat(cookie["expires"])
    headers = {h["name"]: h["value"] for h in request["headers"]}
    return request["url"], headers, {c["name"]: c["value"] for c in request["cookies"]}


def test_cookies_json_round_trips(session: Session) -> None:
    """--format cookies.json gives back every cookie with its value, domain, path and flags."""
    record = session.record()
    cookies = read_cookies_json(session.harvest("cache", "get", "cerebras", "--format", "cookies.json").stdout)
    assert set(cookies) == {c["name"] for c in record["cookies"]}
    for c in record["cookies"]:
        got = cookies[c["name"]]
        assert (got["value"], got["path"], got["httpOnly"], got["secure"]) == (
            c["value"],
            c["path"],
            c["http_only"],
            c["secure"],
        )
        assert got["domain"] == (c["domain"] or "127.0.0.1")


def test_har_round_trips(session: Session) -> None:
    """--format har gives back the origin, the user agent, the client hints, the API key and every cookie."""
    record = session.record()
    url, headers, cookies = read_har(session.harvest("cache", "get", "cerebras", "--format", "har").stdout)
    assert url == record["origin"] + "/"
    assert headers["Host"] == record["origin"].split("://", 1)[1]
    assert headers["User-Agent"] == record["user_agent"]
    for name, value in record["headers"].items():
        assert headers[name] == value
    assert headers["Authorization"] == f"Bearer {record['api_key']}"
    assert cookies == {c["name"]: c["value"] for c in record["cookies"]}
    assert headers["Cookie"] == "; ".join(f"{c['name']}={c['value']}" for c in record["cookies"])


# -- harvest cache export -------------------------------------------------------------------------------------


def test_export_writes_private_files_atomically(session: Session) -> None:
    """`cache export DIR --format F` writes DIR/<name>.<ext> (0600) in a new 0700 DIR, and no temp file."""
    directory = session.home / "out" / "har"
    for fmt, ending in (("har", "har"), ("cookies.json", "cookies.json"), ("storage-state", "storage-state.json")):
        out = session.harvest("cache", "export", str(directory), "--format", fmt)
        path = directory / f"cerebras.{ending}"
        assert out.stdout.strip() == str(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text() == session.harvest("cache", "get", "cerebras", "--format", fmt).stdout
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert sorted(p.name for p in directory.iterdir()) == [
        "cerebras.cookies.json",
        "cerebras.har",
        "cerebras.storage-state.json",
    ]


def test_export_refuses_a_shared_directory_and_unknown_names(session: Session) -> None:
    """A group- or world-writable DIR is refused (exit 2, nothing written); an unknown NAME exits 1."""
    shared = session.home / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    out = session.harvest("cache", "export", str(shared), "--format", "har", check=False)
    assert out.returncode == _exit.USAGE and "writable by other users" in out.stderr
    assert list(shared.iterdir()) == []
    missing = session.harvest("cache", "export", str(session.home / "x"), "--format", "har", "nope", check=False)
    assert missing.returncode == _exit.NOT_FOUND and "nope" in missing.stderr
    assert not (session.home / "x" / "nope.har").exists()


def test_every_readme_cache_example_runs_in_bash(session: Session) -> None:
    """Each line of the README's cache examples works pasted into bash, in order (kept last: it deletes the record)."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("## The cache") :]
    block = section[section.index("```sh\n") + 6 :]
    lines = [line for line in block[: block.index("```")].splitlines() if line.strip()]
    assert len(lines) >= 15 and any(line.startswith("curl -K <(") for line in lines)
    home = session.home / "readme-home"
    home.mkdir()
    before = session.challenges()
    # One script, as pasted: the lines share the shell (the eval'd variables), and set -e stops at a failing one.
    trap = "trap 'echo \"README line failed: $BASH_COMMAND\" >&2' ERR"
    out = session.bash(f"export HOME={home}\n{trap}\n" + "\n".join(lines))
    assert out.returncode == 0, out.stderr[-2000:]
    # The three requests (curl -K, curl -b, wget) each printed the app page, and no challenge was served.
    assert out.stdout.count(APP_PAGE) == 3 and CHALLENGE not in out.stdout
    assert session.challenges() == before
    assert (home / "harvest-exports" / "cerebras.har").stat().st_mode & 0o777 == 0o600
