"""A cache reader in its own process: ``python -m tests.daemon._reader --providers a,b --seconds S``.

It waits for every provider's first record, then reads the cache in a tight loop for ``S`` seconds and
prints one JSON line: how many reads it made, how many found a missing or expired record, and every secret
value it saw (so the test can prove none reached the daemon's log).
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson

from cache import AuthCache


def main() -> int:
    """Run the reader; exit 0 (the verdict is in the JSON)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--providers", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--first-timeout", type=float, default=60.0)
    args = parser.parse_args()
    names = args.providers.split(",")
    cache = AuthCache.open()
    secrets: set[str] = set()
    deadline = time.monotonic() + args.first_timeout
    while not all(cache.get(n) is not None for n in names):
        if time.monotonic() > deadline:
            print(orjson.dumps({"error": "no first record"}).decode(), flush=True)
            return 0
        time.sleep(0.05)
    reads = misses = 0
    problems: list[str] = []
    harvested: dict[str, set[str]] = {n: set() for n in names}
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        for name in names:
            record = cache.get(name)
            reads += 1
            if record is None or record.is_expired:
                misses += 1
                if len(problems) < 10:
                    problems.append(f"{name}: {'missing' if record is None else 'expired ' + str(record.expires_at)}")
                continue
            harvested[name].add(record.harvested_at.isoformat())
            secrets.update(c.value for c in record.cookies)
            if record.api_key:
                secrets.add(record.api_key)
        time.sleep(0.02)
    report = {
        "reads": reads,
        "misses": misses,
        "problems": problems,
        "generations": {n: len(v) for n, v in harvested.items()},
        "secrets": sorted(secrets),
    }
    print(orjson.dumps(report).decode(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
