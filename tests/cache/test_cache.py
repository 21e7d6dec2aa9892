"""AuthCache against real files: encryption, bad files, keys, permissions, rotation and reset."""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from cache import AuthCache, CacheCorruptError, CacheError, SessionRecord, WrongKeyError, generate_key

from .test_record import SECRETS, make_record


@pytest.fixture
def cache() -> AuthCache:
    return AuthCache.open()


def test_round_trip_and_no_plaintext_secret_on_disk(cache: AuthCache) -> None:
    """A stored record reads back equal, from this and from a fresh handle, and no secret is in the file bytes."""
    record = make_record()
    cache.put(record)
    assert cache.get("cerebras") == record
    assert AuthCache.open().get("cerebras") == record
    raw = cache.path.read_bytes()
    assert raw.startswith(b"HARVEST\x00")
    for secret in (*SECRETS, "cf_clearance", "Mozilla"):
        assert secret.encode() not in raw


def test_get_list_update_delete(cache: AuthCache) -> None:
    """get returns None for an absent record, update reads-modifies-writes, delete removes."""
    assert cache.get("cerebras") is None and cache.list() == []
    cache.put(make_record())
    cache.put(make_record(provider="deepinfra"))
    assert [r.provider for r in cache.list()] == ["cerebras", "deepinfra"]
    updated = cache.update("cerebras", lambda r: r.replace(api_key="new-key") if r else None)
    assert updated is not None and AuthCache.open().get("cerebras").api_key == "new-key"  # type: ignore[union-attr]
    assert cache.update("cerebras", lambda r: None) is None
    assert cache.get("cerebras") is None
    assert cache.delete("deepinfra") is True and cache.delete("deepinfra") is False


def test_file_and_directory_permissions(cache: AuthCache) -> None:
    """The cache file is 0600, its directory 0700, and the key file made on first write is 0600."""
    cache.put(make_record())
    assert stat.S_IMODE(cache.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.path.parent.stat().st_mode) == 0o700
    key_file = Path(os.environ["HARVEST_CACHE_KEY_FILE"])
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


@pytest.mark.parametrize("damage", ["flip-body", "flip-header", "flip-nonce", "truncate", "garbage", "empty"])
def test_damaged_file_raises_corrupt_and_is_never_overwritten(cache: AuthCache, damage: str) -> None:
    """Any damaged file gives CacheCorruptError on read and on write, and its bytes stay exactly as they were."""
    cache.put(make_record())
    raw = bytearray(cache.path.read_bytes())
    if damage == "flip-body":
        raw[-5] ^= 0x01
    elif damage == "flip-header":
        raw[15] ^= 0x01
    elif damage == "flip-nonce":
        raw[len(raw) - 40] ^= 0x80
    elif damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "garbage":
        raw = bytearray(b"not a cache file at all" * 5)
    else:
        raw = bytearray()
    cache.path.write_bytes(bytes(raw))
    fresh = AuthCache.open()
    with pytest.raises(CacheCorruptError, match="harvest cache reset") as info:
        fresh.get("cerebras")
    assert info.value.path == cache.path
    with pytest.raises(CacheCorruptError):
        fresh.put(make_record(provider="other"))
    assert cache.path.read_bytes() == bytes(raw)


def test_every_single_flipped_byte_is_detected(cache: AuthCache) -> None:
    """Flipping any one byte of the file makes it unreadable (corrupt, or for key-id bytes, a wrong key)."""
    cache.put(make_record())
    original = cache.path.read_bytes()
    for index in range(0, len(original), 7):
        damaged = bytearray(original)
        damaged[index] ^= 0x04
        cache.path.write_bytes(bytes(damaged))
        with pytest.raises((CacheCorruptError, WrongKeyError)):
            AuthCache.open().get("cerebras")


def test_wrong_key_is_its_own_error_and_loses_nothing(cache: AuthCache) -> None:
    """Another key gives WrongKeyError (not 'corrupt'), and a write with it leaves the file untouched."""
    cache.put(make_record())
    before = cache.path.read_bytes()
    other = AuthCache.open(key=generate_key())
    with pytest.raises(WrongKeyError, match="another key"):
        other.get("cerebras")
    with pytest.raises(WrongKeyError):
        other.put(make_record(provider="x"))
    assert cache.path.read_bytes() == before


def test_key_precedence_env_key_then_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    """HARVEST_CACHE_KEY beats a passphrase; a passphrase cache stores its scrypt salt in the header."""
    monkeypatch.setenv("HARVEST_CACHE_PASSPHRASE", "correct horse battery staple")
    AuthCache.open().put(make_record())
    raw = AuthCache.open().path.read_bytes()
    assert b'"kdf":"scrypt"' in raw and b'"salt"' in raw
    assert AuthCache.open().get("cerebras") == make_record()
    monkeypatch.setenv("HARVEST_CACHE_PASSPHRASE", "wrong passphrase")
    with pytest.raises(WrongKeyError):
        AuthCache.open().get("cerebras")
    monkeypatch.setenv("HARVEST_CACHE_KEY", generate_key())
    with pytest.raises(WrongKeyError):  # the env key wins over the passphrase, and it is not this file's key
        AuthCache.open().get("cerebras")


def test_missing_key_file_for_existing_cache_says_what_to_do(cache: AuthCache) -> None:
    """A cache whose key file vanished is a WrongKeyError naming the key source, not a silent empty cache."""
    cache.put(make_record())
    Path(os.environ["HARVEST_CACHE_KEY_FILE"]).unlink()
    with pytest.raises(WrongKeyError, match="no cache key"):
        AuthCache.open().get("cerebras")


def test_rotate_key_re_encrypts_everything(cache: AuthCache) -> None:
    """After rotation the new key file opens every record and the old key no longer does."""
    cache.put(make_record())
    cache.put(make_record(provider="deepinfra"))
    key_file = Path(os.environ["HARVEST_CACHE_KEY_FILE"])
    old_key = key_file.read_text().strip()
    where = cache.rotate_key()
    assert where == str(key_file)
    assert key_file.read_text().strip() != old_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert [r.provider for r in AuthCache.open().list()] == ["cerebras", "deepinfra"]
    with pytest.raises(WrongKeyError):
        AuthCache.open(key=old_key).get("cerebras")


def test_reset_moves_the_bad_file_aside(cache: AuthCache) -> None:
    """reset keeps the bad bytes as <name>.bad-<timestamp> and the cache starts empty and writable."""
    cache.put(make_record())
    cache.path.write_bytes(b"HARVEST\x00junk")
    moved = AuthCache.open().reset()
    assert (
        moved is not None
        and moved.name.startswith(cache.path.name + ".bad-")
        and moved.read_bytes() == b"HARVEST\x00junk"
    )
    fresh = AuthCache.open()
    assert fresh.list() == []
    fresh.put(make_record())
    assert fresh.get("cerebras") == make_record()


def test_errors_share_one_root_and_carry_no_secret(cache: AuthCache, caplog: pytest.LogCaptureFixture) -> None:
    """Every cache error is a CacheError, and neither its text nor any log line shows a secret."""
    caplog.set_level(logging.DEBUG)
    cache.put(make_record())
    cache.path.write_bytes(cache.path.read_bytes()[:-3])
    with pytest.raises(CacheError) as info:
        AuthCache.open().get("cerebras")
    for secret in SECRETS:
        assert secret not in str(info.value) and secret not in caplog.text
    assert repr(AuthCache.open()).startswith("AuthCache(")


def test_reads_are_served_from_memory_until_the_file_changes(cache: AuthCache) -> None:
    """A second handle sees another handle's write on its next read, without reopening."""
    reader = AuthCache.open()
    assert reader.get("cerebras") is None
    cache.put(make_record())
    assert reader.get("cerebras") == make_record()
    cache.put(make_record(api_key="rotated"))
    assert reader.get("cerebras").api_key == "rotated"  # type: ignore[union-attr]


def test_update_refuses_a_record_for_another_provider(cache: AuthCache) -> None:
    """update(name, fn) must return a record for that name; a mismatch is a programming error."""
    with pytest.raises(ValueError, match="returned a record"):
        cache.update("cerebras", lambda r: SessionRecord(provider="other"))


def test_one_handle_shared_by_threads_stays_true_to_the_file(cache: AuthCache) -> None:
    """Threads reading and writing through one AuthCache (the daemon and the provider clients do) never leave
    it pinned to an older read: afterwards it agrees with a fresh handle, and every write is there."""
    import sys
    import threading

    writers, rounds = 4, 25
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            for round_ in range(rounds):
                cache.put(make_record(provider=f"p{index}", extras={"round": str(round_)}))
                for _ in range(3):
                    cache.list()  # reads racing the other threads' writes and reads
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(writers)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, so the races actually happen
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert not errors
    assert cache.list() == AuthCache.open().list()
    assert {record.provider: record.extras["round"] for record in cache.list()} == {
        f"p{i}": str(rounds - 1) for i in range(writers)
    }


def test_writers_in_one_process_take_turns_without_polling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads of one process writing at once wait on each other, not on a polled lock: 8 threads' puts take about
    as long as the same puts made one after another (with filelock's 50 ms poll they took many times longer)."""
    monkeypatch.setenv("HARVEST_CACHE", str(tmp_path / "s.cache"))
    cache = AuthCache.open()
    names = [f"p{i}" for i in range(8)]
    cache.put(make_record(provider="warm-up"))

    def puts(name: str) -> None:
        for _ in range(5):
            cache.put(make_record(provider=name))

    started = time.perf_counter()
    for name in names:
        puts(name)
    one_after_another = time.perf_counter() - started
    threads = [threading.Thread(target=puts, args=(name,)) for name in names]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    at_once = time.perf_counter() - started
    assert sorted(r.provider for r in cache.list()) == sorted([*names, "warm-up"])
    assert at_once < 2 * one_after_another + 0.05, (at_once, one_after_another)
