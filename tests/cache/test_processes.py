"""The cache shared by real processes: concurrent writers and readers, and writers killed with SIGKILL."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from cache import AuthCache, SessionRecord

ROOT = Path(__file__).resolve().parents[2]


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.cache._workers", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_writers_and_readers_lose_nothing() -> None:
    """4 writer processes updating different providers while 2 readers loop: no read error, no lost update."""
    AuthCache.open().put(SessionRecord(provider="seed", extras={"n": 1}))
    per_writer = 60
    writers = [spawn("writer", f"provider-{i}", str(per_writer)) for i in range(4)]
    readers = [spawn("reader", "4") for _ in range(2)]
    for proc in writers + readers:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    for proc in readers:
        assert proc.returncode == 0
    final = {r.provider: r.extras["n"] for r in AuthCache.open().list()}
    assert final == {"seed": 1, **{f"provider-{i}": per_writer for i in range(4)}}


def test_readers_really_overlapped_the_writers() -> None:
    """The readers made many reads while writers ran, so the concurrency test exercised real overlap."""
    AuthCache.open().put(SessionRecord(provider="seed", extras={"n": 1}))
    writer = spawn("writer", "busy", "80")
    reader = spawn("reader", "2")
    r_out, r_err = reader.communicate(timeout=60)
    writer.communicate(timeout=120)
    assert reader.returncode == 0, r_err
    assert int(r_out.strip()) > 50
    assert AuthCache.open().get("busy").extras["n"] == 80  # type: ignore[union-attr]


def test_writer_killed_at_random_moments_always_leaves_a_whole_file() -> None:
    """SIGKILL at random moments, 25 times: the file always opens to one complete generation of all records."""
    rng = random.Random(1234)
    path = AuthCache.open().path
    seen_generations = set()
    for _ in range(25):
        proc = spawn("generations")
        assert proc.stdout is not None
        proc.stdout.readline()  # at least one complete write happened
        time.sleep(rng.uniform(0.0, 0.05))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()  # type: ignore[union-attr]
        records = AuthCache.open().list()
        assert len(records) == 20
        generations = {r.extras["gen"] for r in records}
        assert len(generations) == 1, f"mixed generations {generations}"
        seen_generations |= generations
        leftovers = [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
        for tmp in leftovers:  # a killed writer may leave its temp file; it is never the cache itself
            tmp.unlink()
    assert len(seen_generations) > 1
