"""Cache benchmark: in-process ``AuthCache.get`` with 50 records, and the ``harvest cache get`` CLI's wall time.

Compared in the same run with what a tool would otherwise do: decrypt the file on every call (a cold handle),
and ``python -c pass`` (the floor for any Python CLI).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cache import AuthCache, Cookie, SessionRecord, generate_key

ROOT = Path(__file__).resolve().parents[1]
HARVEST = str(Path(sys.executable).with_name("harvest"))


def median_ms(fn, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="harvest-bench-") as tmp:
        os.environ["HARVEST_CACHE"] = f"{tmp}/sessions.cache"
        os.environ["HARVEST_CACHE_KEY"] = generate_key()
        cache = AuthCache.open()
        expires = datetime.now(UTC) + timedelta(hours=1)
        ua = "Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0.0.0"
        for i in range(50):
            cookies = [Cookie(f"c{j}", "v" * 40, ".example.com", http_only=True) for j in range(6)]
            cache.put(SessionRecord(f"p{i}", cookies, ua, {"sec-ch-ua": "x"}, "key", expires_at=expires))
        warm = AuthCache.open()
        warm.get("p0")
        warm_ms = median_ms(lambda: warm.get("p25"), 20_000)
        cold_ms = median_ms(lambda: AuthCache.open().get("p25"), 300)

        def cli(*args: str) -> None:
            subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd=ROOT)

        for _ in range(3):
            cli(HARVEST, "cache", "get", "p25", "--json")
        runs = 30
        floor_ms = median_ms(lambda: cli(sys.executable, "-c", "pass"), runs)
        get_ms = median_ms(lambda: cli(HARVEST, "cache", "get", "p25", "--json"), runs)

    print(f"{'case':<44}{'median':>12}{'target':>10}{'ratio':>10}")
    print(f"{'AuthCache.get, 50 records (warm handle)':<44}{warm_ms * 1000:>9.1f} µs{'≤ 0.3 ms':>10}{'':>10}")
    print(f"{'  vs decrypt per call (fresh handle)':<44}{cold_ms * 1000:>9.1f} µs{'':>10}{cold_ms / warm_ms:>9.0f}×")
    print(f"{'harvest cache get NAME --json (wall)':<44}{get_ms:>9.1f} ms{'≤ 100 ms':>10}{get_ms / floor_ms:>9.1f}×")
    print(f"{'  python -c pass (floor)':<44}{floor_ms:>9.1f} ms{'':>10}{1:>9.1f}×")


if __name__ == "__main__":
    main()
