"""The cache on a real redis-server: every CLI verb, typed errors, pub/sub invalidation, stale reads and faults."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from cache import (
    AuthCache,
    CacheConflictError,
    CacheUnavailableError,
    SessionRecord,
    WrongKeyError,
    generate_key,
    open_storage,
)
from cache._redis import RedisStorage

from .._redis import RedisServer, free_port
from .test_cli import HARVEST
from .test_record import SECRETS, make_record

ROOT = Path(__file__).resolve().parents[2]


def command_calls(admin: Any) -> dict[str, int]:
    """How many times the server has run each command so far (``INFO commandstats``), by ``cmdstat_NAME``."""
    return {name: stats["calls"] for name, stats in admin.info("commandstats").items()}


def cli(location: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"HARVEST_CACHE": location}
    return subprocess.run([HARVEST, *args], input=stdin, capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)


def test_every_cli_verb_works_on_redis(redis_location: str, redis_server: RedisServer) -> None:
    """put, list, get (every format), path, rotate-key, delete and reset behave on Redis as on the file."""
    record = make_record()
    assert cli(redis_location, "cache", "put", "-", stdin=json.dumps(record.to_json())).returncode == 0
    listed = cli(redis_location, "cache", "list", "--json")
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["provider"] == "cerebras"
    got = cli(redis_location, "cache", "get", "cerebras", "--json")
    assert got.returncode == 0 and json.loads(got.stdout) == record.to_json()
    for fmt in ("cookies.txt", "env", "curl", "header"):
        assert cli(redis_location, "cache", "get", "cerebras", "--format", fmt).returncode == 0
    path = cli(redis_location, "cache", "path")
    assert path.returncode == 0 and redis_server.password not in path.stdout and ":***@127.0.0.1" in path.stdout
    rotated = cli(redis_location, "cache", "rotate-key")
    assert rotated.returncode == 0, rotated.stderr
    assert AuthCache.open(redis_location).get("cerebras") == record
    assert cli(redis_location, "cache", "delete", "cerebras").returncode == 0
    assert cli(redis_location, "cache", "get", "cerebras").returncode == 1
    AuthCache.open(redis_location).put(record)
    reset = cli(redis_location, "cache", "reset")
    assert reset.returncode == 0 and "bad-" in reset.stdout
    assert AuthCache.open(redis_location).list() == []


def test_redis_holds_only_ciphertext(redis_location: str) -> None:
    """Nothing under the prefix holds a cookie, key, UA or header value in plaintext."""
    cache = AuthCache.open(redis_location)
    cache.put(make_record())
    storage = cache.storage
    assert isinstance(storage, RedisStorage)
    client = storage.client
    for key in client.scan_iter(f"{storage.prefix}:*"):
        value = client.get(key) if client.type(key) == b"string" else b""
        for secret in (*SECRETS, "cf_clearance", "Mozilla"):
            assert secret.encode() not in (value or b"")
    cache.close()


def test_wrong_key_on_redis_is_the_same_wrong_key_error(redis_location: str) -> None:
    """Another key reads as WrongKeyError, and its write leaves the blob untouched."""
    AuthCache.open(redis_location).put(make_record())
    storage = open_storage(redis_location)
    before = storage.load()[0]
    other = AuthCache.open(redis_location, key=generate_key())
    with pytest.raises(WrongKeyError):
        other.get("cerebras")
    with pytest.raises(WrongKeyError):
        other.put(make_record(provider="x"))
    assert storage.load()[0] == before


def test_wrong_password_is_exit_3_naming_the_server_not_the_password(redis_server: RedisServer) -> None:
    """A wrong password: exit 3, one line naming host:port, and neither password appears anywhere."""
    url = redis_server.url("wrongpw", password="not-the-password")
    for args in (("cache", "list"), ("cache", "get", "x"), ("cache", "put", "-")):
        result = cli(url, *args, stdin=json.dumps(make_record().to_json()))
        assert result.returncode == 3, (args, result.stderr)
        assert "127.0.0.1" in result.stderr and "credentials" in result.stderr
        assert "not-the-password" not in result.stderr + result.stdout
        assert redis_server.password not in result.stderr + result.stdout
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_unreachable_redis_at_start_is_exit_3() -> None:
    """Nothing listening on the port: exit 3 with one line naming the server, for reads and writes."""
    url = f"redis://:secret-pw@127.0.0.1:{free_port()}/0"
    for args in (("cache", "list"), ("cache", "get", "x"), ("cache", "delete", "x")):
        result = cli(url, *args)
        assert result.returncode == 3 and "connection refused" in result.stderr, result.stderr
        assert "secret-pw" not in result.stderr and "Traceback" not in result.stderr
    with pytest.raises(CacheUnavailableError, match="cannot reach"):
        AuthCache.open(url).get("x")


def test_a_write_on_one_handle_reaches_another_by_pub_sub(redis_location: str) -> None:
    """A reader's warm view is invalidated by another process's write, with no round trip per read meanwhile."""
    reader = AuthCache.open(redis_location)
    reader.put(make_record())
    assert reader.get("cerebras") == make_record()
    storage = reader.storage
    assert isinstance(storage, RedisStorage)
    assert storage._subscribed.wait(5)
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from cache import AuthCache; from tests.cache.test_record import make_record; "
         "AuthCache.open(sys.argv[1]).put(make_record(api_key='changed'))", redis_location],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    deadline = time.monotonic() + 5
    while reader.get("cerebras").api_key != "changed":  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the write never reached the reader"
        time.sleep(0.005)
    reader.close()


def test_readers_serve_their_view_while_redis_is_down_and_writers_recover(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis killed: a warm reader keeps answering (logged as stale), a writer fails typed, and both recover."""
    url = own_redis.url("fault")
    cache = AuthCache.open(url)
    cache.put(make_record())
    assert cache.get("cerebras") == make_record()
    storage = cache.storage
    assert isinstance(storage, RedisStorage) and storage._subscribed.wait(5)
    caplog.set_level(logging.WARNING, logger="harvest.cache")
    own_redis.kill()
    deadline = time.monotonic() + 5
    while storage._subscribed.is_set():  # the subscriber notices the lost connection
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for _ in range(50):
        assert cache.get("cerebras") == make_record()
    assert "cache.stale" in caplog.text
    with pytest.raises(CacheUnavailableError):
        cache.put(make_record(provider="other"))
    with pytest.raises(CacheUnavailableError):
        AuthCache.open(url).get("cerebras")  # a reader with no view has nothing to serve
    own_redis.start()  # an empty server again (no persistence): the writer recovers
    deadline = time.monotonic() + 10
    while True:
        try:
            cache.put(make_record(provider="other"))
            break
        except CacheUnavailableError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert AuthCache.open(url).get("other") is not None
    cache.close()


def test_a_cold_get_after_a_server_restart_reads_on_a_new_connection(own_redis: RedisServer) -> None:
    """The connection a process keeps for blob reads, closed by a restarted server, is replaced: the get answers."""
    url = own_redis.url("restart")
    cache = AuthCache.open(url)
    cache.put(make_record())
    assert AuthCache.open(url).get("cerebras") == make_record()  # the process now holds a read connection
    own_redis.restart()  # an empty server: no persistence
    writer = AuthCache.open(url)
    writer.put(make_record(provider="other"))  # through the client's pool, which redis-py reconnects
    assert AuthCache.open(url).get("other") == make_record(provider="other")
    cache.close()
    writer.close()


def test_warm_get_on_redis_makes_no_round_trip(redis_location: str) -> None:
    """Once subscribed, 2000 warm gets send no command to the server (the version comes from pub/sub)."""
    cache = AuthCache.open(redis_location)
    cache.put(make_record())
    cache.get("cerebras")
    storage = cache.storage
    assert isinstance(storage, RedisStorage) and storage._subscribed.wait(5)
    cache.get("cerebras")
    before = storage.client.info("stats")["total_commands_processed"]
    for _ in range(2000):
        assert cache.get("cerebras") is not None
    after = storage.client.info("stats")["total_commands_processed"]
    assert after - before <= 3  # the INFO call itself, and at most a stray health check
    cache.close()


def test_cold_get_on_redis_is_one_connection_and_one_round_trip(redis_location: str, redis_server: RedisServer) -> None:
    """A first get opens one connection, sends AUTH and one MGET: no version check, handshake extras or subscriber;
    another handle opened meanwhile in the same process shares that client and sends one MGET."""
    import redis

    writer = AuthCache.open(redis_location)
    writer.put(make_record())
    writer.close()  # the last handle on the process's client: the next open starts a new one
    admin = redis.Redis(port=redis_server.port, password=redis_server.password)

    def counts() -> tuple[dict[str, int], int, int]:
        stats = admin.info("commandstats")
        errors = sum(v["count"] for v in admin.info("errorstats").values())
        return (
            {name: v["calls"] for name, v in stats.items()},
            admin.info("stats")["total_connections_received"],
            errors,
        )

    before, connections, errors = counts()
    cold = AuthCache.open(redis_location)
    assert cold.get("cerebras") == make_record()
    after, connections_after, errors_after = counts()
    sent = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}
    sent.pop("cmdstat_info")  # our own INFO calls
    assert sent == {"cmdstat_auth": 1, "cmdstat_mget": 1}
    assert connections_after - connections == 1
    assert errors_after == errors  # a CLIENT SETINFO or MAINT_NOTIFICATIONS refused by this Redis counts here
    second = AuthCache.open(redis_location)
    assert second.get("cerebras") == make_record()
    final, connections_final, _ = counts()
    sent = {name: final[name] - after.get(name, 0) for name in final if final[name] != after.get(name, 0)}
    sent.pop("cmdstat_info")
    assert sent == {"cmdstat_mget": 1}
    assert connections_final == connections_after
    for handle in (cold, second):
        handle.close()
    admin.close()


def test_a_warm_writer_builds_on_its_view_with_one_keeper_thread(
    redis_location: str, redis_server: RedisServer
) -> None:
    """Puts on a subscribed handle read no blob (the compare-and-set guards the view), and share one keeper thread."""
    import redis

    cache = AuthCache.open(redis_location)
    cache.put(make_record())
    cache.get("cerebras")
    storage = cache.storage
    assert isinstance(storage, RedisStorage) and storage._subscribed.wait(5)
    admin = redis.Redis(port=redis_server.port, password=redis_server.password)
    before = command_calls(admin)
    threads = threading.active_count()
    for i in range(5):
        cache.put(make_record(api_key=f"k{i}"))
        assert threading.active_count() == threads  # the keeper started at the first put is reused
    after = command_calls(admin)
    assert after.get("cmdstat_mget", 0) == before.get("cmdstat_mget", 0)  # load() is one MGET
    # Another process's write that this handle has not heard of yet is refused by the compare-and-set, re-read
    # and kept: no update is lost.
    other = AuthCache.open(redis_location)
    other.put(make_record(provider="other"))
    assert storage.wait_for_version(int(other._view.token), 5)  # type: ignore[arg-type]
    storage._known = (0, True)  # as if the publish were still in flight: the view looks current
    cache._view.token = 0
    cache.put(make_record(api_key="last"))
    stored = {r.provider: r.api_key for r in AuthCache.open(redis_location).list()}
    assert stored == {"cerebras": "last", "other": "csk-api-secret"}
    for handle in (cache, other):
        handle.close()
    admin.close()


def test_a_warm_writer_takes_no_lock_and_yields_to_a_locked_one(redis_location: str, redis_server: RedisServer) -> None:
    """A put on a current view is one compare-and-set (no lock round trips); while another writer holds the lock,
    such a save is refused and the put waits for the lock instead, so a writer under the lock is never starved."""
    import redis

    cache = AuthCache.open(redis_location)
    cache.put(make_record())
    cache.get("cerebras")
    storage = cache.storage
    assert isinstance(storage, RedisStorage) and storage._subscribed.wait(5)
    admin = redis.Redis(port=redis_server.port, password=redis_server.password)
    before = command_calls(admin)
    for i in range(5):
        cache.put(make_record(api_key=f"k{i}"))
    after = command_calls(admin)
    # One SET per put, inside our compare-and-set script; a lock would add a SET NX and a release's DEL each.
    assert after.get("cmdstat_set", 0) - before.get("cmdstat_set", 0) == 5
    assert after.get("cmdstat_del", 0) == before.get("cmdstat_del", 0)
    version = storage.version()
    other = AuthCache.open(redis_location)
    with other.storage.lock(5):
        with pytest.raises(CacheConflictError):
            storage.save(b"x", version, unlocked=True)
        done = threading.Event()
        writer = threading.Thread(target=lambda: (cache.put(make_record(api_key="after")), done.set()))
        writer.start()
        assert not done.wait(0.3)  # refused while the lock is held: it waits for the lock
    writer.join(10)
    assert done.is_set() and AuthCache.open(redis_location).get("cerebras").api_key == "after"  # type: ignore[union-attr]
    for handle in (cache, other):
        handle.close()
    admin.close()


def test_a_writer_whose_view_is_stale_reads_and_writes_without_the_lock(
    redis_location: str, redis_server: RedisServer
) -> None:
    """A put on a view another node's write made stale is a read and a compare-and-set, with no lock, so writers
    never wait for a lock holder that is slow to be scheduled (only a conflict takes the lock)."""
    import redis

    cache = AuthCache.open(redis_location)
    cache.put(make_record())
    cache.get("cerebras")
    other = AuthCache.open(redis_location)
    other.put(make_record(provider="other"))
    storage = cache.storage
    assert isinstance(storage, RedisStorage) and storage.wait_for_version(int(other._view.token), 5)  # type: ignore[arg-type]
    admin = redis.Redis(port=redis_server.port, password=redis_server.password)
    before = command_calls(admin)
    cache.put(make_record(api_key="stale view"))
    after = command_calls(admin)
    # One SET (in the compare-and-set script); a lock would add a SET NX and a release's DEL.
    assert after.get("cmdstat_set", 0) - before.get("cmdstat_set", 0) == 1
    assert after.get("cmdstat_del", 0) == before.get("cmdstat_del", 0)
    assert after.get("cmdstat_mget", 0) - before.get("cmdstat_mget", 0) == 1  # the read of the current blob
    stored = {r.provider: r.api_key for r in AuthCache.open(redis_location).list()}
    assert stored == {"cerebras": "stale view", "other": "csk-api-secret"}
    for handle in (cache, other):
        handle.close()
    admin.close()


def test_only_a_compare_and_set_storage_is_written_without_the_lock(redis_location: str, tmp_path: Path) -> None:
    """RedisStorage is a CasStorage (AuthCache writes it unlocked); FileStorage is not, and a write takes its lock."""
    from cache import CasStorage, FileStorage

    redis_cache = AuthCache.open(redis_location)
    file_cache = AuthCache.open(tmp_path / "c.cache")
    assert isinstance(redis_cache.storage, CasStorage) and not isinstance(file_cache.storage, CasStorage)
    assert isinstance(file_cache.storage, FileStorage)
    file_cache.put(make_record())
    with file_cache.storage.lock(5):  # held elsewhere: a write on a current file view still waits for it
        writer = threading.Thread(target=lambda: file_cache.put(make_record(api_key="later")))
        writer.start()
        writer.join(0.3)
        assert writer.is_alive()
    writer.join(10)
    assert AuthCache.open(tmp_path / "c.cache").get("cerebras").api_key == "later"  # type: ignore[union-attr]
    redis_cache.close()


def test_a_fresh_get_sees_a_write_whose_publish_has_not_arrived(redis_location: str) -> None:
    """``get(fresh=True)`` reads the server, so a caller that just took a lock sees the last holder's write even
    while this handle's subscriber has not heard of it (single flight reads this way under the harvest lock)."""
    cache = AuthCache.open(redis_location)
    cache.put(make_record())
    cache.get("cerebras")
    storage = cache.storage
    assert isinstance(storage, RedisStorage) and storage._subscribed.wait(5)
    lagging = storage._known
    other = AuthCache.open(redis_location)
    other.put(make_record(api_key="from-another-node"))
    assert storage.wait_for_version(int(other._view.token), 5)  # type: ignore[arg-type]
    storage._known = lagging  # as if the publish were still on its way
    assert cache.get("cerebras").api_key == "csk-api-secret"  # type: ignore[union-attr]
    assert cache.get("cerebras", fresh=True).api_key == "from-another-node"  # type: ignore[union-attr]
    for handle in (cache, other):
        handle.close()


def test_a_reader_installs_a_pushed_write_without_a_round_trip(redis_location: str, redis_server: RedisServer) -> None:
    """Another node's write reaches a subscribed reader with its blob: the reader's next get answers the new
    record and sends the server nothing."""
    import redis

    reader = AuthCache.open(redis_location)
    writer = AuthCache.open(redis_location)
    writer.put(make_record())
    assert reader.get("cerebras") is not None
    reader.get("cerebras")
    storage = reader.storage
    assert isinstance(storage, RedisStorage) and storage._subscribed.wait(5)
    admin = redis.Redis(port=redis_server.port, password=redis_server.password)
    writer.put(make_record(api_key="pushed"))
    assert storage.wait_for_version(int(writer._view.token), 5)  # type: ignore[arg-type]
    before = command_calls(admin)
    assert reader.get("cerebras").api_key == "pushed"  # type: ignore[union-attr]
    after = command_calls(admin)
    assert after.get("cmdstat_mget", 0) == before.get("cmdstat_mget", 0)
    assert reader.get("cerebras", fresh=True).api_key == "pushed"  # type: ignore[union-attr]
    for handle in (reader, writer):
        handle.close()
    admin.close()


def test_lock_of_a_killed_holder_frees_within_its_ttl(redis_location: str) -> None:
    """A process SIGKILLed while holding a harvest lock: another takes it within the TTL (2 s here), not before."""
    env = os.environ | {"HARVEST_CACHE": redis_location}
    holder = subprocess.Popen(
        [sys.executable, "-m", "tests.cache._workers", "hold", "named", "cerebras", "60"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        time.sleep(2.5)  # longer than the TTL: the holder's keeper thread has been extending it
        storage = open_storage(redis_location)
        from cache import CacheLockTimeout

        with pytest.raises(CacheLockTimeout), storage.named_lock("cerebras", 0.3):
            pass
    finally:
        holder.kill()
        holder.communicate(timeout=10)
    start = time.monotonic()
    with storage.named_lock("cerebras", 10):
        waited = time.monotonic() - start
    assert waited <= 3.0
    storage.close()


def test_url_forms_and_bad_urls() -> None:
    """unix:// and rediss:// select Redis; a bad prefix or lock_ttl is a one-line CacheError; the URL shows no password."""
    from cache import CacheError

    assert isinstance(open_storage("unix:///tmp/nope.sock?prefix=a"), RedisStorage)
    assert isinstance(open_storage("rediss://:pw@127.0.0.1:1/0"), RedisStorage)
    assert open_storage("redis://:pw@127.0.0.1:1/0").location == "redis://:***@127.0.0.1:1/0"
    assert open_storage("redis://user:pw@127.0.0.1:1/0").location == "redis://user:***@127.0.0.1:1/0"
    for bad in (
        "redis://127.0.0.1:1/0?prefix=",
        "redis://127.0.0.1:1/0?lock_ttl=0",
        "redis://127.0.0.1:1/0?lock_ttl=x",
    ):
        with pytest.raises(CacheError):
            open_storage(bad)
    assert SessionRecord  # the record type is shared by both backends


def test_cache_url_from_flag_and_config(redis_location: str, tmp_path: Path) -> None:
    """`--cache URL` and the config's `[cache] url` select Redis; $HARVEST_CACHE beats the config."""
    AuthCache.open(redis_location).put(make_record())
    env = {k: v for k, v in os.environ.items() if k != "HARVEST_CACHE"}
    flag = subprocess.run([HARVEST, "--cache", redis_location, "cache", "get", "cerebras"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)  # fmt: skip
    assert flag.returncode == 0, flag.stderr
    Path(os.environ["HARVEST_CONFIG"]).parent.mkdir(parents=True, exist_ok=True)
    Path(os.environ["HARVEST_CONFIG"]).write_text(f'[cache]\nurl = "{redis_location}"\n')
    for args in (("cache", "get", "cerebras"), ("cache", "list", "--json")):
        result = subprocess.run([HARVEST, *args], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
        assert result.returncode == 0 and "cerebras" in result.stdout, result.stderr
    path = subprocess.run([HARVEST, "cache", "path"], capture_output=True, text=True, timeout=60, cwd=ROOT, env=env)
    assert path.stdout.startswith("redis://:***@")
    file_env = env | {"HARVEST_CACHE": str(tmp_path / "f.cache")}
    result = subprocess.run([HARVEST, "cache", "get", "cerebras"], capture_output=True, text=True, timeout=60, cwd=ROOT, env=file_env)  # fmt: skip
    assert result.returncode == 1  # the env's empty file cache, not the config's Redis
