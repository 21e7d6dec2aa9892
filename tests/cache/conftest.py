"""Fixtures of the cache tests: a fresh storage of every backend."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cache import open_storage
from cache._storage import Storage

BACKENDS = ["file", "redis"]


@pytest.fixture(params=BACKENDS)
def location(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where the storage under test lives (a path or a URL), also exported as HARVEST_CACHE."""
    if request.param == "file":
        where = str(tmp_path / "contract" / "sessions.cache")
    else:
        where = request.getfixturevalue(f"{request.param}_location")
    monkeypatch.setenv("HARVEST_CACHE", where)
    return where


@pytest.fixture
def storage(location: str) -> Iterator[Storage]:
    s = open_storage(location)
    yield s
    s.close()
