"""Fixtures for the daemon's tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def daemon_tmp() -> Iterator[Path]:
    """A short private TMPDIR for a daemon under test, so its browsers and profiles can be counted.

    Short on purpose: Chromium puts a Unix socket in TMPDIR, and pytest's own tmp paths overflow the
    108-byte limit on socket paths (Chromium then aborts at start).
    """
    path = Path(tempfile.mkdtemp(prefix="hd-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
