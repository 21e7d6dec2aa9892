"""The ``Storage`` contract, run against every backend: a new backend plugs in by passing these tests.

Each test gets a fresh, empty storage and ``HARVEST_CACHE`` pointing at it, so worker processes open the same one
(the ``location`` and ``storage`` fixtures, in conftest.py).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cache import AuthCache, CacheConflictError, CacheCorruptError, CacheLockTimeout, SessionRecord, open_storage
from cache._storage import Storage

from .conftest import stored_blob
from .test_record import make_record

ROOT = Path(__file__).resolve().parents[2]


def spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.cache._workers", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_versions_track_every_save(storage: Storage) -> None:
    """Empty storage has no version; each save returns a new token that load and version() agree on."""
    assert storage.version() is None and storage.load() == (None, None)
    with storage.lock(5):
        first = storage.save(b"one", None)
    assert storage.load() == (b"one", first) and storage.version() == first
    with storage.lock(5):
        second = storage.save(b"two" * 1000, first)
    assert second != first and storage.load() == (b"two" * 1000, second)


def test_save_from_a_stale_version_is_refused_and_changes_nothing(storage: Storage) -> None:
    """A save whose expected version is not the current one raises CacheConflictError and writes nothing."""
    with storage.lock(5):
        first = storage.save(b"one", None)
        second = storage.save(b"two", first)
        with pytest.raises(CacheConflictError):
            storage.save(b"lost", first)
        with pytest.raises(CacheConflictError):
            storage.save(b"lost", None)
    assert storage.load() == (b"two", second)


def test_replace_is_atomic_for_readers(storage: Storage, location: str) -> None:
    """A reader looping during 200 saves of alternating large blobs only ever sees one whole blob or the other."""
    blobs = (b"A" * 300_000, b"B" * 200_000)
    with storage.lock(5):
        version = storage.save(blobs[0], None)
    seen: set[bytes] = set()
    done = threading.Event()
    reader = open_storage(location)

    def read() -> None:
        while not done.is_set():
            data, _ = reader.load()
            seen.add(data[:1] + bytes([len(data) % 251]) if data is not None else b"none")
            assert data in blobs

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for i in range(200):
            with storage.lock(5):
                version = storage.save(blobs[i % 2], version)
    finally:
        done.set()
        thread.join(30)
        reader.close()
    assert len(seen) == 2


def test_no_update_is_lost_across_processes(location: str) -> None:
    """4 writer processes each doing 40 read-modify-writes through AuthCache: every increment is there."""
    AuthCache.open(location).put(SessionRecord(provider="seed", extras={"n": 1}))
    writers = [spawn("writer", f"provider-{i}", "40") for i in range(4)]
    writers.append(spawn("writer", "shared", "40"))
    for proc in writers:
        _, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
    final = {r.provider: r.extras["n"] for r in AuthCache.open(location).list()}
    assert final == {"seed": 1, "shared": 40, **{f"provider-{i}": 40 for i in range(4)}}


def test_tampered_blob_is_detected_and_never_overwritten(storage: Storage, location: str) -> None:
    """A blob with one flipped byte reads as CacheCorruptError, a write refuses to replace it, and it stays as it was."""
    cache = AuthCache.open(location)
    cache.put(make_record())
    data, version = storage.load()
    assert data is not None
    damaged = bytearray(data)
    damaged[-3] ^= 0x10
    with storage.lock(5):
        storage.save(bytes(damaged), version)
    fresh = AuthCache.open(location)
    with pytest.raises(CacheCorruptError, match="harvest cache reset"):
        fresh.get("cerebras")
    with pytest.raises(CacheCorruptError):
        fresh.put(make_record(provider="other"))
    assert storage.load()[0] == bytes(damaged)
    moved = fresh.reset()
    assert moved is not None and storage.version() is None and fresh.list() == []


def test_a_malformed_record_is_reported_where_it_is_read(storage: Storage, location: str) -> None:
    """A record of a bad shape in a sound blob: reading it, listing or writing is CacheCorruptError; others still read."""
    from cache._format import decrypt, encrypt

    cache = AuthCache.open(location)
    cache.put(make_record())
    data, header, key, version = stored_blob(storage)
    document = decrypt(data, header, key)
    document["records"]["broken"] = {"provider": "broken", "cookies": "not a list"}
    with storage.lock(5):
        storage.save(encrypt(document, key, header.kdf), version)
    damaged = storage.load()[0]
    fresh = AuthCache.open(location)
    assert fresh.get("cerebras") == make_record()  # the view is lazy: only the record asked for is parsed
    for read in (lambda: fresh.get("broken"), fresh.list, lambda: fresh.put(make_record(provider="other"))):
        with pytest.raises(CacheCorruptError, match=r"a record is malformed \(cookies: expected a list\).*cache reset"):
            read()
    assert storage.load()[0] == damaged


@pytest.mark.parametrize("kind", ["lock", "named"])
def test_lock_held_by_another_process_times_out(location: str, storage: Storage, kind: str) -> None:
    """While another process holds the lock, taking it fails with CacheLockTimeout after about the timeout."""
    holder = spawn("hold", kind, "cerebras", "30")
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with (
            pytest.raises(CacheLockTimeout),
            storage.lock(0.4) if kind == "lock" else storage.named_lock("cerebras", 0.4),
        ):
            pass
        assert 0.3 <= time.monotonic() - start < 5
        if kind == "named":
            with storage.named_lock("deepinfra", 1):  # another name is another lock
                pass
            with storage.lock(1):  # and the writer lock is separate from the named ones
                pass
    finally:
        holder.kill()
        holder.communicate(timeout=10)
    # A dead holder frees it: at once for a flock, within the lock's TTL for a server lock.
    with storage.lock(10) if kind == "lock" else storage.named_lock("cerebras", 10):
        pass


def test_named_lock_is_exclusive_across_threads(storage: Storage) -> None:
    """Two threads taking one named lock never hold it at the same time."""
    inside = 0
    overlaps = 0
    guard = threading.Lock()

    def work() -> None:
        nonlocal inside, overlaps
        for _ in range(20):
            with storage.named_lock("cerebras", 10):
                with guard:
                    inside += 1
                    overlaps += inside > 1
                time.sleep(0.001)
                with guard:
                    inside -= 1

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert overlaps == 0
