"""``harvest status``: the report merged from the cache and the daemon's status file."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import orjson
from click.testing import CliRunner

from cache import AuthCache, Cookie, SessionRecord, utcnow
from harvester.cli import main
from harvester.daemon import ProviderState, build_report, status_path
from harvester.daemon._status import status_document, write_status

SECRET = "status-cli-cookie-SECRET"


def _seed(*, running: bool) -> AuthCache:
    cache = AuthCache.open()
    now = utcnow()
    cache.put(
        SessionRecord(
            provider="cerebras",
            cookies=[Cookie("cf_clearance", SECRET)],
            api_key="status-cli-api-key-SECRET",
            harvested_at=now,
            expires_at=now + timedelta(hours=1),
        )
    )
    states = {
        "cerebras": ProviderState("cerebras", last_success=now, next_run=now + timedelta(minutes=50), harvests=3),
        "cloudflare": ProviderState(
            "cloudflare",
            last_failure=now,
            last_error="BlockedError: Access denied",
            consecutive_failures=2,
            failures=2,
            next_run=now + timedelta(seconds=60),
        ),
    }
    write_status(status_path(cache.path), status_document(states, pid=os.getpid(), started_at=now, running=running))
    return cache


def test_status_json_merges_cache_and_status_file(isolated_env: Path) -> None:
    """--json lists each provider's record state, last success/failure, error and next run, without secrets."""
    _seed(running=True)
    result = CliRunner().invoke(main, ["status", "--json"])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.output)
    assert report["daemon"]["running"] is True and report["daemon"]["pid"] == os.getpid()
    rows = {row["provider"]: row for row in report["providers"]}
    assert rows["cerebras"]["record"] == "fresh" and rows["cerebras"]["harvests"] == 3
    assert rows["cerebras"]["record_expires_at"] and rows["cerebras"]["last_success"]
    assert rows["cloudflare"]["record"] == "missing"
    assert rows["cloudflare"]["last_error"] == "BlockedError: Access denied"
    assert rows["cloudflare"]["consecutive_failures"] == 2 and rows["cloudflare"]["next_run"]
    assert SECRET not in result.output


def test_status_table_shows_errors_and_a_stopped_daemon(isolated_env: Path) -> None:
    """The table says the daemon is not running and shows each provider's error."""
    _seed(running=False)
    result = CliRunner().invoke(main, ["status"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "daemon not running" in result.output
    assert "BlockedError: Access denied" in result.output
    assert "cerebras" in result.output and "fresh" in result.output


def test_status_without_any_daemon_or_cache(isolated_env: Path) -> None:
    """With no status file and no cache, status reports an empty, stopped daemon and exits 0."""
    result = CliRunner().invoke(main, ["status", "--json"])
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.output) == {
        "daemon": {"running": False, "pid": None, "started_at": None, "updated_at": None},
        "providers": [],
    }


def test_status_with_an_unreadable_cache_falls_back_to_the_status_file(isolated_env: Path) -> None:
    """A cache under another key still shows the status file's view, warns, and exits with CACHE_ERROR."""
    _seed(running=True)
    other = CliRunner().invoke(main, ["status", "--json"], env={"HARVEST_CACHE_KEY": "A" * 43 + "="})
    assert other.exit_code == 3
    assert "warning:" in other.output
    assert '"cerebras"' in other.output


def test_report_marks_an_expired_record() -> None:
    """A record past its expiry is reported as expired."""
    now = utcnow()
    record = SessionRecord(provider="x", harvested_at=now - timedelta(hours=2), expires_at=now - timedelta(seconds=1))
    report = build_report(None, {"x": record}, now=now)
    assert report["providers"][0]["record"] == "expired"
    assert report["providers"][0]["scheduled"] is False
