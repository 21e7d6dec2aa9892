"""Fixtures of the cache tests: a fresh storage of every backend."""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from pathlib import Path

import pytest

from cache import open_storage
from cache._format import Header, read_header
from cache._keys import KeySource
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


def stored_blob(storage: Storage) -> tuple[bytes, Header, bytes, Hashable | None]:
    """The blob ``storage`` holds, its header, the key that opens it (the test's key source) and its version."""
    data, version = storage.load()
    assert data is not None
    header = read_header(data)
    return data, header, KeySource.resolve(None).key_for(header.kdf), version
