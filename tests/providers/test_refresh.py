"""default_refresher: the harvester behind the Refresher protocol, and what a failed refresh leaves behind."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cache import AuthCache, utcnow
from providers import FreeNetfly, MissingAuthError, Refresher, default_refresher
from tests.emulator._server import EmulatorThread

from .conftest import MESSAGES, make_record


async def collect(gen: Any) -> list[Any]:
    return [item async for item in gen]


@pytest.fixture
def no_browser(isolated_env: Path) -> Path:
    """A config whose Chromium does not exist, so every harvest fails at once (BrowserError)."""
    config = isolated_env / "config" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('[browser]\npath = "/nonexistent/chromium"\n')
    return config


def test_default_refresher_is_a_refresher(cache: AuthCache) -> None:
    """default_refresher(cache) satisfies the Refresher protocol without importing the harvester yet."""
    refresher = default_refresher(cache)
    assert isinstance(refresher, Refresher)


async def test_failed_refresh_keeps_a_valid_record(
    emulator: EmulatorThread, cache: AuthCache, no_browser: Path
) -> None:
    """A valid, unexpired record that the API refuses stays cached when the refresh fails, and the error does not
    call it expired.

    Regression (issue 9, item 6): the heal deleted the record before harvesting, so a failed harvest emptied the
    cache and said "the session expired".
    """
    emulator.configure(require_clearance=False, challenge_api=True)  # every API call: a 403 challenge
    record = make_record("freenetfly", expires_at=utcnow() + timedelta(hours=1))
    cache.put(record)
    with pytest.raises(MissingAuthError) as info:
        await collect(FreeNetfly.create_async_generator("gpt-4", MESSAGES, base_url=emulator.url))
    message = str(info.value)
    assert "expired" not in message
    assert "refused the session" in message
    assert f"harvest --provider freenetfly --base-url {emulator.url}" in message
    kept = cache.get("freenetfly")
    assert kept is not None and kept.harvested_at == record.harvested_at


async def test_failed_refresh_of_an_expired_record_says_expired(
    emulator: EmulatorThread, cache: AuthCache, no_browser: Path
) -> None:
    """When the refused record had expired, the error says so."""
    emulator.configure(require_clearance=False, challenge_api=True)
    cache.put(make_record("freenetfly", expires_at=utcnow() - timedelta(minutes=1)))
    with pytest.raises(MissingAuthError, match="the session expired"):
        await collect(FreeNetfly.create_async_generator("gpt-4", MESSAGES, base_url=emulator.url))


async def test_without_the_harvester_the_error_names_the_command(
    emulator: EmulatorThread, cache: AuthCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the harvester not installed, a refused session is a MissingAuthError naming the harvest command."""
    monkeypatch.setitem(sys.modules, "harvester", None)  # what `import harvester` sees when it is not installed
    emulator.configure(require_clearance=False, challenge_api=True)
    with pytest.raises(MissingAuthError) as info:
        await collect(FreeNetfly.create_async_generator("gpt-4", MESSAGES, base_url=emulator.url))
    assert isinstance(info.value.__cause__, ImportError)
    assert f"harvest --provider freenetfly --base-url {emulator.url}" in str(info.value)
