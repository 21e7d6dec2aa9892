"""Worker processes for the concurrency and crash tests (run as ``python -m tests.cache._workers``)."""

from __future__ import annotations

import sys
import time

from cache import AuthCache, Cookie, SessionRecord, open_storage


def writer(provider: str, count: int) -> None:
    """Increment ``extras["n"]`` of one provider's record ``count`` times, each under the lock."""
    c = AuthCache.open()
    for _ in range(count):
        c.update(
            provider,
            lambda rec: (rec or SessionRecord(provider=provider)).replace(
                extras={"n": (rec.extras["n"] if rec else 0) + 1}
            ),
        )


def reader(seconds: float) -> None:
    """Read every record in a loop; any error propagates and fails the process."""
    c = AuthCache.open()
    deadline = time.monotonic() + seconds
    reads = 0
    while time.monotonic() < deadline:
        for rec in c.list():
            assert rec.extras["n"] >= 1
        reads += 1
    print(reads)


def generations() -> None:
    """Rewrite all 20 records with one generation number per write, forever (until killed)."""
    c = AuthCache.open()
    gen = 0
    while True:
        gen += 1
        records = [
            SessionRecord(
                provider=f"p{i}",
                cookies=[Cookie("cf_clearance", f"v{gen}-{i}" * 20, ".example.com")],
                extras={"gen": gen},
            )
            for i in range(20)
        ]
        c._write(lambda current, records=records: current.update({r.provider: r for r in records}))
        print(gen, flush=True)


def hold(kind: str, name: str, seconds: float) -> None:
    """Hold the cache's writer lock (``kind`` = "lock") or a named lock, say "held", then sleep."""
    storage = open_storage()
    lock = storage.lock(10) if kind == "lock" else storage.named_lock(name, 10)
    with lock:
        print("held", flush=True)
        time.sleep(seconds)
    storage.close()


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "hold":
        hold(args[0], args[1], float(args[2]))
    if command == "writer":
        writer(args[0], int(args[1]))
    elif command == "reader":
        reader(float(args[0]))
    elif command == "generations":
        generations()
