"""The daemon's loop, shutdown order, backoff, reload and status, in-process with a fake harvester."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from types import MappingProxyType

import aiohttp
import orjson
import pytest

from cache import AuthCache, SessionRecord, generate_key
from harvester import harvest
from harvester.daemon import (
    Daemon,
    DaemonSettings,
    ProviderSpec,
    SchedulePolicy,
    SecretRegistry,
    read_status,
    status_path,
)

from ._fakes import API_KEY_SECRET, AUTH_HEADER_SECRET, COOKIE_SECRET, FakeHarvester, captured_log

FAST = SchedulePolicy(min_margin=0.5, backoff_base=0.2, backoff_cap=1.0, jitter_ratio=0.0)


def _settings(*names: str, **changes: object) -> DaemonSettings:
    providers = {n: ProviderSpec(n, base_url="http://127.0.0.1:9") for n in names}
    base = DaemonSettings(policy=FAST, browser_idle_close=60.0, providers=MappingProxyType(providers))
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
def cache(tmp_path: Path) -> AuthCache:
    return AuthCache.open(path=tmp_path / "sessions.cache", key=generate_key())


async def _until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def _start(daemon: Daemon) -> asyncio.Task[int]:
    return asyncio.get_running_loop().create_task(daemon.serve())


async def _stop(daemon: Daemon, task: asyncio.Task[int]) -> int:
    daemon.request_exit()
    return await asyncio.wait_for(task, 15)


def _factory(fake: FakeHarvester) -> Callable[[DaemonSettings], FakeHarvester]:
    return lambda settings: fake


async def test_refreshes_each_provider_ahead_of_expiry(cache: AuthCache) -> None:
    """Two providers with 1.5 s records are each harvested at least 3 times and stored in the cache."""
    fake = FakeHarvester(ttl=1.5)
    daemon = Daemon(_settings("alpha", "beta"), cache=cache, harvester_factory=_factory(fake))
    task = _start(daemon)
    await _until(lambda: all(s.harvests >= 3 for s in daemon.states.values()))
    assert await _stop(daemon, task) == 0
    records = {r.provider: r for r in cache.list()}
    assert set(records) == {"alpha", "beta"}
    assert fake.exited


async def test_jobs_coalesce_and_run_one_instance(cache: AuthCache) -> None:
    """Every provider job is scheduled with coalesce=True and max_instances=1."""
    fake = FakeHarvester(ttl=3600.0)
    cache.put(await fake.harvest("alpha"))  # a fresh record: the job waits in the job store
    daemon = Daemon(_settings("alpha"), cache=cache, harvester_factory=_factory(fake))
    seen: list[tuple[bool, int]] = []

    async def started(d: Daemon) -> None:
        job = d._scheduler.get_job("alpha") if d._scheduler else None
        assert job is not None
        seen.append((job.coalesce, job.max_instances))

    task = asyncio.get_running_loop().create_task(daemon.serve(started=started))
    await _until(lambda: bool(seen))
    assert await _stop(daemon, task) == 0
    assert seen == [(True, 1)]


async def test_shutdown_lets_an_inflight_harvest_finish(cache: AuthCache) -> None:
    """A stop request during a harvest waits for it (within the deadline), stores its record, exits 0."""
    fake = FakeHarvester(delay=0.8)
    daemon = Daemon(_settings("alpha", shutdown_timeout=5.0), cache=cache, harvester_factory=_factory(fake))
    task = _start(daemon)
    await _until(lambda: fake.concurrent == 1)
    assert await _stop(daemon, task) == 0
    assert fake.cancelled == []
    assert cache.get("alpha") is not None
    assert daemon.states["alpha"].harvests == 1


async def test_shutdown_cancels_after_the_deadline_and_logs_it(cache: AuthCache) -> None:
    """A harvest still running at the deadline is cancelled, the count is logged, and the exit is 0."""
    fake = FakeHarvester(delay=60.0)
    secrets = SecretRegistry()
    daemon = Daemon(
        _settings("alpha", shutdown_timeout=0.3), cache=cache, harvester_factory=_factory(fake), secrets=secrets
    )
    with captured_log(secrets) as log:
        task = _start(daemon)
        await _until(lambda: fake.concurrent == 1)
        started = time.monotonic()
        assert await _stop(daemon, task) == 0
    assert time.monotonic() - started < 3.0
    assert fake.cancelled == ["alpha"]
    assert "event=daemon.cancelling count=1" in log.getvalue()
    assert "event=harvest.cancelled provider=alpha" in log.getvalue()
    assert fake.exited


async def test_second_stop_request_skips_the_wait(cache: AuthCache) -> None:
    """A second stop request cancels in-flight harvests at once instead of waiting out the deadline."""
    fake = FakeHarvester(delay=60.0)
    daemon = Daemon(_settings("alpha", shutdown_timeout=30.0), cache=cache, harvester_factory=_factory(fake))
    task = _start(daemon)
    await _until(lambda: fake.concurrent == 1)
    started = time.monotonic()
    daemon.request_exit()
    await asyncio.sleep(0.2)
    daemon.request_exit()
    assert await asyncio.wait_for(task, 15) == 0
    assert time.monotonic() - started < 3.0
    assert fake.cancelled == ["alpha"]


async def test_failures_back_off_then_recover(cache: AuthCache) -> None:
    """Failures are recorded with their error and retried under backoff until a harvest succeeds."""
    fake = FakeHarvester(fail_next=3, ttl=30.0)
    daemon = Daemon(_settings("alpha"), cache=cache, harvester_factory=_factory(fake))
    task = _start(daemon)
    await _until(lambda: daemon.states["alpha"].consecutive_failures == 2)
    assert daemon.states["alpha"].last_error is not None
    assert daemon.states["alpha"].last_error.startswith("BlockedError")
    await _until(lambda: daemon.states["alpha"].harvests == 1)
    state = daemon.states["alpha"]
    assert await _stop(daemon, task) == 0
    assert state.failures == 3 and state.consecutive_failures == 0
    assert state.last_failure is not None and state.last_success is not None
    assert state.last_success > state.last_failure


async def test_dead_browser_is_replaced_by_the_next_harvest(cache: AuthCache) -> None:
    """After a browser dies mid-harvest the retry succeeds and the restart shows in the metrics."""
    fake = FakeHarvester(ttl=30.0)
    fake.crash_next = 1
    daemon = Daemon(_settings("alpha"), cache=cache, harvester_factory=_factory(fake))
    task = _start(daemon)
    await _until(lambda: daemon.states["alpha"].harvests == 1)
    assert await _stop(daemon, task) == 0
    assert fake.calls == ["alpha", "alpha"]
    assert daemon.states["alpha"].failures == 1
    assert b"harvest_browser_restarts_total 1.0" in daemon.metrics.exposition()


async def test_hung_browser_is_closed_and_replaced(cache: AuthCache) -> None:
    """A BrowserError from a browser that is still up closes it, counts a restart, and the retry succeeds."""
    fake = FakeHarvester(ttl=30.0)
    fake.hang_next = 1
    daemon = Daemon(_settings("alpha"), cache=cache, harvester_factory=_factory(fake))
    task = _start(daemon)
    await _until(lambda: daemon.states["alpha"].harvests == 1)
    assert await _stop(daemon, task) == 0
    assert fake.closes == 1
    assert fake.calls == ["alpha", "alpha"]
    assert b"harvest_browser_restarts_total 1.0" in daemon.metrics.exposition()


async def test_bug_in_a_harvest_is_logged_with_its_traceback_and_the_browser_kept(cache: AuthCache) -> None:
    """A non-harvest error (a KeyError: a bug) logs at error level with the traceback, backs off, keeps the browser."""
    fake = FakeHarvester(ttl=30.0)
    fake.bug_next = 1
    daemon = Daemon(_settings("alpha"), cache=cache, harvester_factory=_factory(fake))
    with captured_log(SecretRegistry()) as log:
        task = _start(daemon)
        await _until(lambda: daemon.states["alpha"].harvests == 1)
        assert await _stop(daemon, task) == 0
    lines = [line for line in log.getvalue().splitlines() if "harvest.internal_error" in line]
    assert len(lines) == 1 and "level=error" in lines[0].lower() and "KeyError" in lines[0] and "Traceback" in lines[0]
    assert daemon.states["alpha"].failures == 1
    assert fake.closes == 0  # the browser was not replaced for a bug
    assert b"harvest_browser_restarts_total 0.0" in daemon.metrics.exposition()


@pytest.fixture
def stale_profile() -> Iterator[Path]:
    """A browser profile in the temp dir whose owner (a process that has exited) was killed before cleaning up."""
    import shutil
    import tempfile

    from harvester._browser import OWNER_FILE, PROFILE_PREFIX

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = Path(tempfile.mkdtemp(prefix=PROFILE_PREFIX))
    (path / OWNER_FILE).write_text(f"{dead.pid} 1")
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_daemon_start_removes_profiles_of_killed_harvests(cache: AuthCache, stale_profile: Path) -> None:
    """At start the daemon removes browser profiles whose owning process is dead (a harvest killed with -9)."""
    fake = FakeHarvester(ttl=300.0)
    daemon = Daemon(_settings("alpha"), cache=cache, harvester_factory=_factory(fake))
    task = _start(daemon)
    await _until(lambda: daemon.states["alpha"].harvests == 1)
    assert await _stop(daemon, task) == 0
    assert not await asyncio.to_thread(stale_profile.exists)


async def test_idle_browser_is_closed(cache: AuthCache) -> None:
    """The browser is closed once nothing has run for browser_idle_close seconds."""
    fake = FakeHarvester(ttl=300.0)
    daemon = Daemon(_settings("alpha", browser_idle_close=0.3), cache=cache, harvester_factory=_factory(fake))
    task = _start(daemon)
    await _until(lambda: daemon.states["alpha"].harvests == 1)
    assert fake.browser_running or fake.closes == 1
    await _until(lambda: fake.closes == 1 and not fake.browser_running, timeout=5)
    assert await _stop(daemon, task) == 0


async def test_reload_adds_and_removes_providers(cache: AuthCache) -> None:
    """A reload starts a new provider, stops a removed one, and keeps the daemon-wide settings."""
    fake = FakeHarvester(ttl=300.0)
    new = _settings("beta", max_concurrent=7)
    daemon = Daemon(_settings("alpha"), cache=cache, harvester_factory=_factory(fake), reload=lambda: new)
    task = _start(daemon)
    await _until(lambda: daemon.states["alpha"].harvests == 1)
    daemon.request_reload()
    await _until(lambda: "beta" in daemon.states and daemon.states["beta"].harvests == 1)
    assert "alpha" not in daemon.states
    assert daemon._scheduler is not None and daemon._scheduler.get_job("alpha") is None
    assert daemon.settings.max_concurrent == 2  # only a restart applies it
    assert await _stop(daemon, task) == 0


async def test_bad_reload_keeps_the_old_config(cache: AuthCache) -> None:
    """A reload that raises is logged and the daemon goes on with its previous providers."""
    fake = FakeHarvester(ttl=300.0)
    secrets = SecretRegistry()

    def broken() -> DaemonSettings:
        raise ValueError("config.toml: line 3: [daemon] max_concurrent: expected an integer")

    daemon = Daemon(_settings("alpha"), cache=cache, harvester_factory=_factory(fake), reload=broken, secrets=secrets)
    with captured_log(secrets) as log:
        task = _start(daemon)
        await _until(lambda: daemon.states["alpha"].harvests == 1)
        daemon.request_reload()
        await _until(lambda: "config.reload_failed" in log.getvalue())
        assert await _stop(daemon, task) == 0
    assert list(daemon.states) == ["alpha"]
    assert "line 3" in log.getvalue()


async def test_missing_record_harvested_at_once_and_fresh_one_waits(cache: AuthCache) -> None:
    """At start a provider without a record is harvested now; one with a fresh record is not."""
    fresh_fake = FakeHarvester(ttl=3600.0)
    first = Daemon(_settings("alpha"), cache=cache, harvester_factory=_factory(fresh_fake))
    task = _start(first)
    await _until(lambda: first.states["alpha"].harvests == 1)
    assert await _stop(first, task) == 0

    fake = FakeHarvester(ttl=3600.0)
    daemon = Daemon(_settings("alpha", "beta"), cache=cache, harvester_factory=_factory(fake))
    task = _start(daemon)
    await _until(lambda: daemon.states["beta"].harvests == 1)
    await asyncio.sleep(0.3)
    assert fake.calls == ["beta"]
    next_run = daemon.states["alpha"].next_run
    assert next_run is not None and (next_run - daemon.started_at).total_seconds() > 3000
    assert await _stop(daemon, task) == 0


async def test_status_file_has_the_state_and_no_secrets(cache: AuthCache) -> None:
    """The status file beside the cache has each provider's state and none of the record's secrets."""
    fake = FakeHarvester(ttl=300.0, fail_next=1)
    daemon = Daemon(_settings("alpha"), cache=cache, harvester_factory=_factory(fake))
    task = _start(daemon)
    await _until(lambda: daemon.states["alpha"].harvests == 1)
    await asyncio.sleep(0.7)  # the main loop writes the dirty state on its next tick
    path = status_path(cache.path)
    live = read_status(path)
    assert await _stop(daemon, task) == 0
    assert live is not None and live["running"] is True
    entry = live["providers"]["alpha"]
    assert entry["last_success"] and entry["last_failure"] and entry["record_expires_at"] and entry["next_run"]
    final = read_status(path)
    assert final is not None and final["running"] is False
    text = path.read_text()
    for secret in (COOKIE_SECRET, API_KEY_SECRET, AUTH_HEADER_SECRET):
        assert secret not in text


async def test_status_server_serves_health_status_and_metrics(cache: AuthCache) -> None:
    """With listen set, /healthz, /status and /metrics answer on loopback with the daemon's state."""
    fake = FakeHarvester(ttl=300.0)
    daemon = Daemon(_settings("alpha", listen="127.0.0.1:0"), cache=cache, harvester_factory=_factory(fake))
    ports: list[int] = []

    def started(d: Daemon) -> None:
        assert d.server is not None
        ports.append(d.server.port)

    task = asyncio.get_running_loop().create_task(daemon.serve(started=started))
    await _until(lambda: bool(ports) and daemon.states["alpha"].harvests == 1)
    base = f"http://127.0.0.1:{ports[0]}"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/healthz") as response:
            assert response.status == 200
            assert (await response.json()) == {"ok": True}
        async with session.get(f"{base}/status") as response:
            report = await response.json()
        async with session.get(f"{base}/metrics") as response:
            metrics = await response.text()
    assert await _stop(daemon, task) == 0
    assert report["daemon"]["running"] is True
    [row] = report["providers"]
    assert row["provider"] == "alpha" and row["record"] == "fresh" and row["harvests"] == 1
    assert 'harvest_harvests_total{outcome="success",provider="alpha"} 1.0' in metrics
    assert 'harvest_harvest_duration_seconds_count{provider="alpha"} 1.0' in metrics
    assert 'harvest_record_age_seconds{provider="alpha"}' in metrics
    assert "harvest_browser_restarts_total 0.0" in metrics


async def test_log_lines_never_contain_secrets(cache: AuthCache) -> None:
    """Harvests, failures and crashes that carry secrets in their messages log them only as ***."""
    fake = FakeHarvester(ttl=1.0, fail_next=1)
    fake.crash_next = 1
    secrets = SecretRegistry()
    daemon = Daemon(_settings("alpha"), cache=cache, harvester_factory=_factory(fake), secrets=secrets)
    with captured_log(secrets) as log:
        task = _start(daemon)
        await _until(lambda: daemon.states["alpha"].harvests >= 2)
        # A library logging a whole record-ish line after the daemon learned the secrets.
        import logging

        logging.getLogger("some.library").warning("sent cookie %s with key %s", COOKIE_SECRET, API_KEY_SECRET)
        assert await _stop(daemon, task) == 0
    text = log.getvalue()
    assert "event=harvest.ok provider=alpha" in text
    assert "event=harvest.failed provider=alpha" in text
    for secret in (COOKIE_SECRET, API_KEY_SECRET, AUTH_HEADER_SECRET):
        assert secret not in text
    assert "***" in text


async def test_taken_listen_port_fails_before_any_harvest(cache: AuthCache) -> None:
    """A status server address already in use raises OSError at start, before any harvest runs."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        fake = FakeHarvester()
        daemon = Daemon(_settings("alpha", listen=f"127.0.0.1:{port}"), cache=cache, harvester_factory=_factory(fake))
        with pytest.raises(OSError):
            await asyncio.wait_for(daemon.serve(), 15)
    assert fake.calls == []
    assert fake.exited


# -- single flight with other harvests of the same provider ----------------------------------------------

# Another process (a one-shot `harvest --provider alpha`) mid-harvest: it holds the provider's harvest lock,
# says so, waits for the test's go-ahead, then stores a fresh record and releases the lock.
_OTHER_PROCESS = """
import sys, time
from datetime import timedelta
from cache import AuthCache, SessionRecord, utcnow

name = sys.argv[1]
cache = AuthCache.open()
with cache.harvest_lock(name):
    print("locked", flush=True)
    sys.stdin.readline()
    time.sleep(1.0)
    now = utcnow()
    cache.put(SessionRecord(provider=name, user_agent="other-process", harvested_at=now,
                            expires_at=now + timedelta(hours=1)))
    print(now.isoformat(), flush=True)
"""


_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def other_process() -> Iterator[subprocess.Popen[str]]:
    """Another process holding alpha's harvest lock (it has said "locked"); reaped at teardown."""
    with subprocess.Popen(
        [sys.executable, "-c", _OTHER_PROCESS, "alpha"],
        cwd=_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


async def test_refresh_waits_for_another_process_and_uses_its_record(other_process: subprocess.Popen[str]) -> None:
    """A refresh while another process holds the provider's harvest lock waits, then takes its record."""
    assert other_process.stdin is not None and other_process.stdout is not None
    fake = FakeHarvester(ttl=3600.0)
    cache = AuthCache.open()  # $HARVEST_CACHE and its key file, as the other process opens them
    daemon = Daemon(_settings("alpha"), cache=cache, harvester_factory=_factory(fake))
    task = _start(daemon)
    await _until(lambda: daemon.states["alpha"].running)  # harvest() has started: it waits for the lock
    other_process.stdin.write("go\n")
    other_process.stdin.flush()
    stamped = datetime.fromisoformat((await asyncio.to_thread(other_process.stdout.readline)).strip())
    await _until(lambda: daemon.states["alpha"].harvests == 1)
    assert await _stop(daemon, task) == 0
    assert await asyncio.to_thread(other_process.wait, 10) == 0
    state = daemon.states["alpha"]
    assert fake.calls == []
    assert state.failures == 0 and state.last_success is not None
    assert state.record_harvested_at == stamped
    record = cache.get("alpha")
    assert record is not None and record.user_agent == "other-process" and record.harvested_at == stamped


@pytest.mark.parametrize("daemon_first", [True, False], ids=["daemon-first", "one-shot-first"])
async def test_refresh_and_in_process_harvest_make_one_browser_run(daemon_first: bool) -> None:
    """A refresh and a concurrent in-process ``harvester.harvest()`` of one provider make one browser run."""
    fake, other = FakeHarvester(ttl=3600.0), FakeHarvester(ttl=3600.0)
    first = fake if daemon_first else other
    first.gate = asyncio.Event()  # the first harvest holds the locks until the second one is waiting
    settings = _settings("alpha")
    daemon = Daemon(settings, cache=AuthCache.open(), harvester_factory=_factory(fake))
    loop = asyncio.get_running_loop()

    def one_shot() -> asyncio.Task[SessionRecord]:
        coro = harvest("alpha", base_url=settings.providers["alpha"].base_url, harvester=other, cache=AuthCache.open())
        return loop.create_task(coro)

    if daemon_first:
        task = _start(daemon)
        await _until(lambda: fake.concurrent == 1)
        shot = one_shot()
        await asyncio.sleep(0.2)  # it is waiting for the lock
    else:
        shot = one_shot()
        await _until(lambda: other.concurrent == 1)
        task = _start(daemon)
        await _until(lambda: daemon.states["alpha"].running)
        await asyncio.sleep(0.2)
    first.gate.set()
    record = await asyncio.wait_for(shot, 10)
    await _until(lambda: daemon.states["alpha"].harvests == 1)
    assert await _stop(daemon, task) == 0
    assert fake.calls + other.calls == ["alpha"]
    assert first.calls == ["alpha"]
    assert daemon.states["alpha"].record_harvested_at == record.harvested_at


async def test_refresh_gives_the_harvest_the_daemons_timeout(cache: AuthCache) -> None:
    """The refresh hands the daemon's harvest_timeout to the harvester, not harvest()'s own default."""
    fake = FakeHarvester(ttl=3600.0)
    daemon = Daemon(_settings("alpha", harvest_timeout=7.5), cache=cache, harvester_factory=_factory(fake))
    task = _start(daemon)
    await _until(lambda: daemon.states["alpha"].harvests == 1)
    assert await _stop(daemon, task) == 0
    assert fake.timeouts == [7.5]


def _write_config(data: bytes | None) -> Path:
    """Write (None: delete) the config file at $HARVEST_CONFIG; return its path."""
    config = Path(os.environ["HARVEST_CONFIG"])
    config.parent.mkdir(parents=True, exist_ok=True)
    if data is None:
        config.unlink()
    else:
        config.write_bytes(data)
    return config


@pytest.mark.parametrize("damage", ["missing", "not-utf8", "bad-toml"])
async def test_sighup_with_the_config_gone_keeps_providers_and_counters(
    cache: AuthCache, isolated_env: Path, damage: str
) -> None:
    """A reload from a default config file that vanished or went bad is logged; providers and counters stay."""
    from harvester.cli._daemon import _reload_settings

    config = _write_config(b'[providers.alpha]\nurl = "http://127.0.0.1:9/"\n')
    fake = FakeHarvester(ttl=300.0)
    secrets = SecretRegistry()
    daemon = Daemon(
        _settings("alpha"),
        cache=cache,
        harvester_factory=_factory(fake),
        reload=lambda: _reload_settings(None),
        secrets=secrets,
    )
    with captured_log(secrets) as log:
        task = _start(daemon)
        await _until(lambda: daemon.states["alpha"].harvests == 1)
        _write_config({"missing": None, "not-utf8": b"\xff\xfe[", "bad-toml": b"[providers.alpha\n"}[damage])
        daemon.request_reload()
        await _until(lambda: "config.reload_failed" in log.getvalue())
        assert list(daemon.states) == ["alpha"] and daemon.states["alpha"].harvests == 1
        assert daemon._scheduler is not None and daemon._scheduler.get_job("alpha") is not None
        assert await _stop(daemon, task) == 0
    assert "config.reloaded" not in log.getvalue()
    assert str(config) in log.getvalue() or "TOML" in log.getvalue()


async def test_export_files_stay_fresh_across_refreshes(cache: AuthCache, tmp_path: Path) -> None:
    """[daemon] export rewrites DIR/<name>.har after each refresh (0600, atomically, no temp file left)."""
    from harvester._config import ExportTarget

    out = tmp_path / "exports"
    fake = FakeHarvester(ttl=1.2)
    settings = _settings("alpha", exports=(ExportTarget(out, "har"), ExportTarget(out, "cookies.json")))
    daemon = Daemon(settings, cache=cache, harvester_factory=_factory(fake))
    task = _start(daemon)
    seen: list[str] = []

    def started_at() -> str | None:
        path = out / "alpha.har"
        if not path.exists():
            return None
        stamp: str = orjson.loads(path.read_bytes())["log"]["entries"][0]["startedDateTime"]
        if stamp not in seen:
            seen.append(stamp)
        return stamp

    await _until(lambda: started_at() is not None and len(seen) >= 2, timeout=20)
    assert await _stop(daemon, task) == 0
    assert daemon.states["alpha"].harvests >= 2
    assert sorted(p.name for p in out.iterdir()) == ["alpha.cookies.json", "alpha.har"]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in out.iterdir())
    assert out.stat().st_mode & 0o777 == 0o700


async def test_a_failing_export_is_logged_and_the_refresh_counts(cache: AuthCache, tmp_path: Path) -> None:
    """An export into a shared directory is refused with an error line; the harvest itself still succeeds."""
    from harvester._config import ExportTarget

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    secrets = SecretRegistry()
    fake = FakeHarvester(ttl=300.0)
    daemon = Daemon(
        _settings("alpha", exports=(ExportTarget(shared, "har"),)),
        cache=cache,
        harvester_factory=_factory(fake),
        secrets=secrets,
    )
    with captured_log(secrets) as log:
        task = _start(daemon)
        await _until(lambda: "export.failed" in log.getvalue())
        assert await _stop(daemon, task) == 0
    assert daemon.states["alpha"].harvests == 1 and daemon.states["alpha"].failures == 0
    assert "writable by other users" in log.getvalue()
    assert COOKIE_SECRET not in log.getvalue()


async def test_the_listen_server_cuts_off_stalled_connections(cache: AuthCache) -> None:
    """On [daemon] listen, a silent connection and one stuck halfway through its header are closed (issue 9, #20)."""
    fake = FakeHarvester(ttl=300.0)
    daemon = Daemon(_settings("alpha", listen="127.0.0.1:0"), cache=cache, harvester_factory=_factory(fake))
    ports: list[int] = []

    def started(d: Daemon) -> None:
        assert d.server is not None
        ports.append(d.server.port)

    task = asyncio.get_running_loop().create_task(daemon.serve(started=started))
    await _until(lambda: bool(ports))
    silent = await asyncio.open_connection("127.0.0.1", ports[0])
    partial = await asyncio.open_connection("127.0.0.1", ports[0])
    partial[1].write(b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    began = time.monotonic()
    # The header-read timeout is 10 s; EOF (or a reset) well before a minute means the server closed them.
    for reader, writer in (silent, partial):
        try:
            await asyncio.wait_for(reader.read(), 30)
        except ConnectionResetError:
            pass
        writer.close()
    took = time.monotonic() - began
    assert await _stop(daemon, task) == 0
    assert took < 30
