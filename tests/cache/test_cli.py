"""`harvest cache …` as a user runs it: real subprocesses, real files, exit codes and output."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cache import AuthCache

from .test_record import SECRETS, make_record

HARVEST = str(Path(sys.executable).with_name("harvest"))
ROOT = Path(__file__).resolve().parents[2]


def harvest(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([HARVEST, *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=ROOT)


@pytest.fixture
def stored() -> dict:
    record = make_record(expires_at=datetime.now(UTC) + timedelta(hours=1))
    data = record.to_json()
    result = harvest("cache", "put", "-", stdin=json.dumps(data))
    assert result.returncode == 0, result.stderr
    return data


def test_put_then_get_json_round_trips_exactly(stored: dict) -> None:
    """`cache put -` then `cache get --json` gives back exactly the imported JSON, with exactly the contract keys."""
    result = harvest("cache", "get", "cerebras", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == stored
    assert list(json.loads(result.stdout)) == [
        "provider", "cookies", "user_agent", "headers", "api_key", "extras", "proxy",
        "browser", "impersonate", "origin", "harvested_at", "expires_at",
    ]  # fmt: skip


def test_export_formats(stored: dict) -> None:
    """cookies.txt, env, curl (a -K config) and header exports carry the cookies, UA and key in each tool's syntax."""
    txt = harvest("cache", "get", "cerebras", "--format", "cookies.txt").stdout
    assert txt.startswith("# Netscape HTTP Cookie File")
    assert "\n.example.com\tTRUE\t/\tTRUE\t1800000000\tcf_clearance\tcookie-secret-value" in txt
    env = harvest("cache", "get", "cerebras", "--format", "env").stdout
    shell = subprocess.run(
        ["bash", "-c", env + 'printf "%s|%s" "$HARVEST_CEREBRAS_COOKIE" "$HARVEST_CEREBRAS_API_KEY"'],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert shell.stdout == "cf_clearance=cookie-secret-value; _pg_visit=1|csk-api-secret"
    curl = harvest("cache", "get", "cerebras", "--format", "curl").stdout
    assert 'user-agent = "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0.0.0 Safari/537.36"\n' in curl
    assert 'cookie = "cf_clearance=cookie-secret-value; _pg_visit=1"\n' in curl
    assert harvest("cache", "get", "cerebras", "--format", "header").stdout == (
        "Cookie: cf_clearance=cookie-secret-value; _pg_visit=1\n"
    )


def test_list_shows_no_secret(stored: dict) -> None:
    """The list table and its JSON show provider, times, key presence and cookie count, never a secret."""
    table = harvest("cache", "list")
    as_json = harvest("cache", "list", "--json")
    assert table.returncode == as_json.returncode == 0
    assert "cerebras" in table.stdout and "yes" in table.stdout
    summary = json.loads(as_json.stdout)[0]
    assert summary["has_api_key"] is True and summary["cookies"] == 2
    for secret in SECRETS:
        assert secret not in table.stdout + table.stderr + as_json.stdout


def test_exit_codes_for_missing_expired_and_usage(stored: dict) -> None:
    """Missing → 1; expired → warning (and 1 with --fresh); bad flags → 2."""
    assert harvest("cache", "get", "nope").returncode == 1
    AuthCache.open().put(make_record(provider="old", expires_at=datetime.now(UTC) - timedelta(minutes=5)))
    stale = harvest("cache", "get", "old", "--json")
    assert stale.returncode == 0 and "expired" in stale.stderr and json.loads(stale.stdout)["provider"] == "old"
    assert harvest("cache", "get", "old", "--fresh").returncode == 1
    assert harvest("cache", "get", "cerebras", "--format", "yaml").returncode == 2
    assert harvest("cache", "put", "-", stdin="{not json").returncode == 2
    assert harvest("cache", "delete", "nope").returncode == 1


@pytest.mark.parametrize("damage", ["flip", "truncate", "wrong-key"])
def test_bad_file_gives_clear_message_and_exit_3(stored: dict, damage: str) -> None:
    """A tampered, truncated or wrongly keyed file gives exit 3 with what to do, and is left byte-for-byte intact."""
    path = AuthCache.open().path
    raw = bytearray(path.read_bytes())
    env = dict(os.environ)
    if damage == "flip":
        raw[-10] ^= 0xFF
    elif damage == "truncate":
        raw = raw[:40]
    else:
        env["HARVEST_CACHE_KEY"] = harvest("cache", "keygen").stdout.strip()
    path.write_bytes(bytes(raw))
    for args in (["cache", "get", "cerebras"], ["cache", "list"]):
        result = subprocess.run([HARVEST, *args], capture_output=True, text=True, env=env, timeout=60)
        assert result.returncode == 3
        assert "harvest cache reset" in result.stderr
        assert "Traceback" not in result.stderr
    put = subprocess.run(
        [HARVEST, "cache", "put", "-"], input=json.dumps(stored), capture_output=True, text=True, env=env, timeout=60
    )
    assert put.returncode == 3
    assert path.read_bytes() == bytes(raw)


def test_keygen_rotate_and_reset(stored: dict) -> None:
    """keygen prints a 32-byte key; rotate-key says where the new key went; reset moves the file aside."""
    key = harvest("cache", "keygen").stdout.strip()
    assert len(base64.urlsafe_b64decode(key)) == 32
    rotated = harvest("cache", "rotate-key")
    assert rotated.returncode == 0 and os.environ["HARVEST_CACHE_KEY_FILE"] in rotated.stdout
    assert json.loads(harvest("cache", "get", "cerebras", "--json").stdout) == stored
    assert harvest("cache", "path").stdout.strip() == os.environ["HARVEST_CACHE"]
    reset = harvest("cache", "reset")
    assert reset.returncode == 0 and ".bad-" in reset.stdout
    assert harvest("cache", "get", "cerebras").returncode == 1


def test_cache_get_imports_no_browser_or_http_library(stored: dict) -> None:
    """`harvest cache get` loads no browser driver, HTTP client or even click, so it stays fast for other tools."""
    probe = (
        "import sys\n"
        "sys.argv = ['harvest', 'cache', 'get', 'cerebras', '--json']\n"
        "from harvester._entry import main\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "heavy = {'nodriver', 'playwright', 'curl_cffi', 'aiohttp', 'httpx', 'rich', 'apscheduler', 'filelock', 'click'}\n"
        "loaded = heavy & {name.split('.')[0] for name in sys.modules}\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
