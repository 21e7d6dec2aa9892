#!/usr/bin/env python3
"""Redis benchmark: several daemons and many readers sharing one cache on one local redis-server.

    .venv/bin/python scripts/bench_redis.py [--seconds 60] [--daemons 3] [--readers 20] [--ttl 8]

Starts a redis-server (child, password, temp dir), the emulator with ``--ttl``-second sessions, ``--daemons``
``harvest daemon`` processes and ``--readers`` reader processes, all on ``redis://…``. Reports:

* browser runs per provider per refresh window, counted at the emulator (goal: exactly 1); a window is one
  record generation the readers saw;
* failed reads over every reader (goal: 0);
* delay from a write to every reader's view, p50/p99 (goal: p99 <= 50 ms): the bench writes a probe record every
  250 ms and each reader notes when it first sees it;
* warm ``get`` (goal <= 5 us) and cold ``get`` (goal <= 1 ms) on Redis beside the file backend, same run;
* each process's RSS at start and end (one cell per process, then min / median / max).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cache import AuthCache, Cookie, SessionRecord, generate_key  # noqa: E402
from tests._redis import RedisServer  # noqa: E402
from tests.emulator._server import EmulatorThread  # noqa: E402
from tests.emulator._state import EmulatorConfig  # noqa: E402

HARVEST = str(Path(sys.executable).with_name("harvest"))
PROVIDER = "cerebras"
MARGIN = 12.0  # refresh this long before expiry: a harvest takes seconds on a busy host

# A reader reads until its stdin closes (the bench closes it when its probes are done). It says "ready" once its
# view and subscriber are up, and the probes start when every reader is: a reader still starting would count
# its own start-up as a delivery delay.
READER = r"""
import json, os, sys, threading, time
from cache import AuthCache
def rss():
    for line in open(f"/proc/{os.getpid()}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
seconds, provider = float(sys.argv[1]), sys.argv[2]
cache = AuthCache.open()
start_rss = None
reads = failed = expired = 0
delays, loads, probes, seen, generations = [], [], [], None, set()
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
cache.get(provider)
cache.get(provider)  # the second read starts the subscriber
deadline = time.monotonic() + 10
while not cache.storage._subscribed.is_set() and time.monotonic() < deadline:
    time.sleep(0.01)
probe = cache.get("probe")
seen = probe.extras.get("n") if probe is not None else None
print("ready", flush=True)
deadline = time.monotonic() + seconds * 2 + 120  # in case the bench died
while not done.is_set() and time.monotonic() < deadline:
    try:
        started = time.perf_counter()
        probe = cache.get("probe")
        took = time.perf_counter() - started
        record = cache.get(provider)
        reads += 1
        if probe is not None and probe.extras.get("n") != seen:
            seen = probe.extras.get("n")
            delays.append(time.time() - probe.extras["t"])
            loads.append(took)  # the get that saw it: a reload (round trip, decrypt, parse)
            probes.append(seen)
        if record is not None:
            generations.add(record.harvested_at.isoformat())
        if start_rss is None and record is not None:
            start_rss = rss()
        if record is None or record.is_expired:
            expired += 1
    except Exception as exc:
        failed += 1
        print(f"read failed: {exc}", file=sys.stderr)
    time.sleep(0.002)
print(json.dumps({"reads": reads, "failed": failed, "expired": expired, "delays": delays, "loads": loads,
                  "probes": probes,
                  "rss": [start_rss, rss()],
                  "generations": sorted(generations)}))
"""


def rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def median_us(fn, runs: int) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def percentile_ms(values: list[float], q: float) -> float:
    """The ``q`` quantile of sorted seconds, in milliseconds (nan when there are none)."""
    return values[min(int(len(values) * q), len(values) - 1)] * 1000 if values else float("nan")


def sample_record(name: str) -> SessionRecord:
    cookies = [Cookie(f"c{j}", "v" * 40, ".example.com", http_only=True) for j in range(6)]
    return SessionRecord(name, cookies, "Mozilla/5.0", {"sec-ch-ua": "x"}, "key")


RECORDS = 50  # a cache of many providers (four have recipes; `harvest --url` adds any site): 1.2 KB each


def get_costs(location: str, key: str) -> tuple[float, float, int]:
    """(warm, cold) median ``get`` in microseconds, with RECORDS records, and the blob's size."""
    writer = AuthCache.open(location, key=key)
    for i in range(RECORDS):
        writer.put(sample_record(f"p{i}"))
    size = len(writer.storage.load()[0] or b"")
    warm = AuthCache.open(location, key=key)
    warm.get("p25")  # cold: loads the blob
    warm.get("p25")  # the first warm read starts the Redis subscriber
    time.sleep(0.2)  # it is up: warm reads make no round trip
    warm_us = median_us(lambda: warm.get("p25"), 20_000)

    handles: list[AuthCache] = []

    def cold() -> None:
        handle = AuthCache.open(location, key=key)
        handle.get("p25")
        handles.append(handle)  # closed after the timing: closing joins the subscriber thread

    cold_us = median_us(cold, 200)
    for handle in handles:
        handle.close()
    warm.close()
    writer.close()
    return warm_us, cold_us, size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--daemons", type=int, default=3)
    parser.add_argument("--readers", type=int, default=20)
    parser.add_argument("--ttl", type=float, default=30.0)
    parser.add_argument(
        "--browser-nice", type=int, default=None, help="the daemons' [daemon] browser_nice (default: theirs, 10)"
    )
    args = parser.parse_args()

    server = RedisServer().start()
    emulator = EmulatorThread(EmulatorConfig(clearance_ttl=args.ttl, think_ms=50.0))
    emulator.start()
    tmp = Path(tempfile.mkdtemp(prefix="harvest-bench-redis-"))
    key = generate_key()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        # Get costs first, on a quiet machine: Redis beside the file, same run.
        redis_warm, redis_cold, size = get_costs(server.url("costs", lock_ttl=None), key)
        file_warm, file_cold, _ = get_costs(str(tmp / "costs.cache"), key)

        location = server.url("bench", lock_ttl=None)
        config = tmp / "config.toml"
        config.write_text(f'[providers.{PROVIDER}]\nbase_url = "{emulator.url}"\n')
        env = os.environ | {
            "HARVEST_CACHE": location,
            "HARVEST_CACHE_KEY": key,
            "HARVEST_CONFIG": str(config),
            "HARVEST_CACHE_KEY_FILE": str(tmp / "cache.key"),  # this host's state files go beside it
            "HARVEST_DAEMON_MIN_MARGIN": str(MARGIN),
            "HARVEST_DAEMON_BACKOFF_BASE": "0.5",
            "HARVEST_DAEMON_BACKOFF_CAP": "2",
        }
        if args.browser_nice is not None:
            env["HARVEST_DAEMON_BROWSER_NICE"] = str(args.browser_nice)
        daemons = []
        for i in range(args.daemons):
            dtmp = tmp / f"daemon{i}"
            dtmp.mkdir()
            log = open(dtmp / "log", "wb")
            proc = subprocess.Popen(
                [HARVEST, "daemon"], env=env | {"TMPDIR": str(dtmp)}, stdout=log, stderr=log, cwd=ROOT
            )
            daemons.append(proc)
        procs += daemons
        writer = AuthCache.open(location, key=key)
        deadline = time.monotonic() + 60
        while writer.get(PROVIDER) is None:  # the first harvest is in: readers start from a valid record
            if time.monotonic() > deadline:
                raise SystemExit("no daemon stored a record within 60 s; see the daemon logs in " + str(tmp))
            time.sleep(0.2)
        daemon_rss_start = [rss(p.pid) for p in daemons]
        runs_before = emulator.stats["clearances_issued"]
        readers = [
            subprocess.Popen(
                [sys.executable, "-c", READER, str(args.seconds), PROVIDER],
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                cwd=ROOT,
            )
            for _ in range(args.readers)
        ]
        procs += readers
        for reader in readers:  # each has its view and its subscriber: from now on a delay is a delivery
            assert reader.stdout is not None
            if reader.stdout.readline().strip() != b"ready":
                raise SystemExit("a reader did not start; see its stderr above")
        started = time.monotonic()
        n = 0
        puts = []
        put_at: dict[int, tuple[float, float]] = {}  # probe -> (wall time it was written, put seconds)
        while time.monotonic() - started < args.seconds:
            n += 1
            put_started = time.perf_counter()
            at = time.time()
            writer.put(SessionRecord("probe", extras={"n": n, "t": at}))
            puts.append(time.perf_counter() - put_started)
            put_at[n] = (at, puts[-1])
            time.sleep(0.25)
        results = [json.loads(r.communicate(b"", timeout=60)[0]) for r in readers]
        elapsed = time.monotonic() - started
        daemon_rss_end = [rss(p.pid) for p in daemons]
        for proc in daemons:  # a refresh in flight finishes (or is cancelled) before the runs are counted
            proc.terminate()
        for proc in daemons:
            proc.wait(60)
        runs = emulator.stats["clearances_issued"] - runs_before
        harvests = harvest_runs([tmp / f"daemon{i}" / "log" for i in range(args.daemons)])
        final = writer.get(PROVIDER)
        writer.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        emulator.stop()
        server.stop()
        import shutil

        if os.environ.get("HARVEST_BENCH_KEEP"):
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    # A refresh window is one record generation: every reader saw each one the daemons stored while they ran.
    generations = set().union(*(r["generations"] for r in results)) if results else set()
    if final is not None:
        generations.add(final.harvested_at.isoformat())
    windows = max(len(generations) - 1, 1)  # the first one was there before the count started
    delays = sorted(d for r in results for d in r["delays"])
    p50, p99 = percentile_ms(delays, 0.5), percentile_ms(delays, 0.99)
    loads = sorted(d for r in results for d in r["loads"])
    puts.sort()
    reads = sum(r["reads"] for r in results)
    failed = sum(r["failed"] for r in results)
    expired = sum(r["expired"] for r in results)
    nice = "the default" if args.browser_nice is None else args.browser_nice
    print(
        f"{args.daemons} daemons (browser_nice {nice}), {args.readers} readers, {elapsed:.0f} s, {args.ttl:g} s "
        "sessions, one redis-server"
    )
    print(
        f"{'browser runs per refresh window':<44}{runs / windows:>10.2f}   goal 1    ({runs} runs, {windows} windows)"
    )
    print(f"{'failed reads (an error)':<44}{failed:>10d}   goal 0    (of {reads} reads)")
    print(f"{'reads of an expired record':<44}{expired:>10d}   (a refresh slower than the margin)")
    print(f"{'write -> every reader view, p50':<44}{p50:>7.1f} ms")
    print(f"{'write -> every reader view, p99':<44}{p99:>7.1f} ms   goal <= 50 ms  ({len(delays)} samples)")
    print(
        f"{'  of which: writer put p50 / p99':<44}{percentile_ms(puts, 0.5):>7.1f} ms / {percentile_ms(puts, 0.99):.1f} ms"
    )
    print(
        f"{'  of which: reader reload p50 / p99':<44}{percentile_ms(loads, 0.5):>7.1f} ms / "
        f"{percentile_ms(loads, 0.99):.1f} ms   (the rest: pub/sub delivery, the 2 ms poll, scheduling)"
    )
    print(f"{'warm get, Redis / file':<44}{redis_warm:>7.2f} us / {file_warm:.2f} us   goal <= 5 us")
    print(
        f"{'cold get, Redis / file':<44}{redis_cold:>7.0f} us / {file_cold:.0f} us   goal <= 1 ms  "
        f"({RECORDS} records, a {size / 1024:.0f} KiB blob)"
    )
    print(
        f"{'RSS MiB start->end, each process':<44}(start: daemons after the first harvest, readers at their first read)"
    )
    rss_rows("daemon", [(a, b) for a, b in zip(daemon_rss_start, daemon_rss_end, strict=True)])
    rss_rows("reader", [tuple(r["rss"]) for r in results])
    tail_rows(results, put_at, harvests, len(delays))


def harvest_runs(logs: list[Path]) -> list[tuple[float, float, int]]:
    """Each daemon's harvests from its log, as (start, end, daemon index) in wall-clock seconds."""
    from datetime import datetime

    runs = []
    for index, log in enumerate(logs):
        started = None
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
            event, ts = fields.get("event"), fields.get("ts")
            if ts is None or event not in ("harvest.started", "harvest.ok", "harvest.failed"):
                continue
            when = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
            if event == "harvest.started":
                started = when
            elif started is not None:
                runs.append((started, when, index))
                started = None
    return sorted(runs)


def tail_rows(results: list[dict], put_at: dict[int, tuple[float, float]], harvests: list, samples: int) -> None:
    """Where the slow deliveries fall: the probes some reader saw more than 50 ms late, beside the harvests."""
    late: dict[int, list[float]] = {}
    for result in results:
        for n, delay in zip(result["probes"], result["delays"], strict=True):
            if delay > 0.05:
                late.setdefault(n, []).append(delay)
    count = sum(len(v) for v in late.values())

    def harvest_near(at: float) -> str:
        # A harvest's browser work: its page load, then the spare tab it opens after it (about a second more).
        for start, end, index in harvests:
            if start - 0.2 <= at <= end + 1.5:
                return f"daemon {index} harvesting ({at - start:+.1f} s from its start, {end - start:.1f} s long)"
        return "no harvest running"

    during = sum(len(v) for n, v in late.items() if "harvesting" in harvest_near(put_at[n][0]))
    print(
        f"{'deliveries > 50 ms (a reader, a probe)':<44}{count:>7d}      of {samples}, in {len(late)} probes; "
        f"{during} during a harvest ({len(harvests)} harvests)"
    )
    first = min((at for at, _ in put_at.values()), default=0.0)
    for n in sorted(late, key=lambda n: -max(late[n]))[:8]:
        at, put = put_at[n]
        print(
            f"    probe {n:>3} at +{at - first:5.1f} s: {len(late[n]):>2} readers late, worst {max(late[n]) * 1000:5.0f} ms, "
            f"put {put * 1000:.1f} ms; {harvest_near(at)}"
        )


def rss_rows(kind: str, pairs: list[tuple[int | None, int]]) -> None:
    """Every process's RSS at start and end, six per line, then min / median / max of each."""
    mib = 1024 * 1024
    cells = [f"{(a or 0) / mib:.1f}->{b / mib:.1f}" for a, b in pairs]
    for i in range(0, len(cells), 6):
        label = f"  {kind}s {i + 1}-{min(i + 6, len(cells))}"
        print(f"{label:<44}{'  '.join(cells[i : i + 6])}")
    starts = [a for a, _ in pairs if a]
    ends = [b for _, b in pairs]
    if starts:
        print(
            f"{'  ' + kind + 's min / median / max':<44}start {min(starts) / mib:.1f} / "
            f"{statistics.median(starts) / mib:.1f} / {max(starts) / mib:.1f}, end {min(ends) / mib:.1f} / "
            f"{statistics.median(ends) / mib:.1f} / {max(ends) / mib:.1f}"
        )


if __name__ == "__main__":
    main()
