"""Shared fixtures: every test runs against its own cache, key and config, never the user's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["tests.emulator.fixtures", "tests._redis"]

_ISOLATED_VARS = (
    "HARVEST_CACHE",
    "HARVEST_CACHE_KEY",
    "HARVEST_CACHE_PASSPHRASE",
    "HARVEST_CACHE_KEY_FILE",
    "HARVEST_CONFIG",
    "HARVEST_SERVER_TOKEN",
)


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point every harvest path at a fresh temp dir so no test reads or writes the user's files."""
    for name in _ISOLATED_VARS:
        monkeypatch.delenv(name, raising=False)
    for name in [n for n in __import__("os").environ if n.startswith("HARVEST_") and n.endswith("_BASE_URL")]:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "harvest-home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("HARVEST_CACHE", str(home / "data" / "sessions.cache"))
    monkeypatch.setenv("HARVEST_CACHE_KEY_FILE", str(home / "config" / "cache.key"))
    monkeypatch.setenv("HARVEST_CONFIG", str(home / "config" / "config.toml"))
    yield home
