"""Fixtures for the harvester tests: every test must leave no Chromium process and no temp profile behind."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HARVEST = str(ROOT / ".venv" / "bin" / "harvest")
PROFILE_PREFIX = "harvest-profile-"


MARK_VAR = "HARVEST_TEST_MARK"


def chromium_pids(mark: str) -> set[int]:
    """Chromium processes started by this test: they inherit its marker variable (other sessions on this
    machine run browsers too); zombies, which have no environment, count when they are our children."""
    me = str(os.getpid())
    needle = f"{MARK_VAR}={mark}".encode()
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            comm = Path(f"/proc/{entry.name}/comm").read_text().strip()
            if "chrom" not in comm.lower():
                continue
            environ = Path(f"/proc/{entry.name}/environ").read_bytes()
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        ppid = stat[stat.rfind(")") + 2 :].split()[1]
        if needle in environ.split(b"\0") or ppid == me:
            found.add(int(entry.name))
    return found


def profile_dirs(root: Path) -> set[str]:
    """The harvester's temp profiles (and nodriver's uc_* ones) under ``root``."""
    return {p.name for p in root.iterdir() if p.name.startswith((PROFILE_PREFIX, "uc_"))}


def wait_clean(mark: str, root: Path, timeout: float = 5.0) -> tuple[set[int], set[str]]:
    """Wait until this test's Chromium processes and profiles are gone; return what remains."""
    deadline = time.monotonic() + timeout
    while True:
        pids, dirs = chromium_pids(mark), profile_dirs(root)
        if (not pids and not dirs) or time.monotonic() > deadline:
            return pids, dirs
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def no_leftovers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Give the test its own temp dir and marker, and fail it if a Chromium process or profile is left."""
    # Short on purpose: Chromium puts Unix sockets under $TMPDIR and aborts when their path is too long.
    root = Path(tempfile.mkdtemp(prefix="ht-", dir="/tmp"))
    mark = uuid.uuid4().hex
    monkeypatch.setenv(MARK_VAR, mark)
    monkeypatch.setenv("TMPDIR", str(root))
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    yield root
    pids, dirs = wait_clean(mark, root)
    shutil.rmtree(root, ignore_errors=True)
    assert not pids, f"leftover Chromium processes: {sorted(pids)}"
    assert not dirs, f"leftover profiles: {sorted(dirs)}"


@pytest.fixture
def harvest_env(isolated_env: Path) -> dict[str, str]:
    """The environment for a `harvest` subprocess: the test's own cache, key and config."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)
    env.pop("PYTHONWARNINGS", None)
    return env


def harvest_cmd(*args: str) -> list[str]:
    """The argv of a `harvest` subprocess (the installed console script)."""
    if os.path.exists(HARVEST):
        return [HARVEST, *args]
    return [sys.executable, "-c", "from harvester.cli import main; main()", *args]


def run_harvest(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """Run `harvest ARGS` to completion, its output captured as text."""
    return subprocess.run(harvest_cmd(*args), env=env, capture_output=True, text=True, timeout=timeout)


def browser_children(pid: int) -> list[int]:
    """Chromium processes whose parent is ``pid`` (the browser a `harvest` process launched)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.find("(") + 1 : stat.rfind(")")]
        fields = stat[stat.rfind(")") + 2 :].split()
        if "chrom" in comm and fields[1] == str(pid) and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.05) -> object:
    """Poll ``predicate`` until it returns something truthy or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
