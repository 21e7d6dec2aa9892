"""Hardening regressions (issue 9): symlinks, injected line breaks, names, unwritable paths, ranges, KDF
bounds, stale temp files and directory modes, each as a user meets it through the CLI or the API."""

from __future__ import annotations

import base64
import json
import os
import stat
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from cache import AuthCache, CacheCorruptError, CacheError, Cookie, RecordError, SessionRecord
from cache._export import FORMATS, render

from .test_cli import HARVEST, harvest
from .test_record import make_record


def cache_path() -> Path:
    return Path(os.environ["HARVEST_CACHE"])


# -- 8: a symlink at the cache path -------------------------------------------------------------------------


def test_symlink_at_cache_path_writes_through_to_its_target(tmp_path: Path) -> None:
    """A write through a symlinked cache path replaces the target (atomically, in its own dir) and keeps the link."""
    real_dir = tmp_path / "elsewhere"
    real_dir.mkdir(mode=0o700)
    target = real_dir / "real.cache"
    AuthCache.open(target).put(make_record())
    link = cache_path()
    link.parent.mkdir(mode=0o700, parents=True)
    link.symlink_to(target)
    AuthCache.open().put(make_record(provider="deepinfra"))
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert [r.provider for r in AuthCache.open(target).list()] == ["cerebras", "deepinfra"]
    assert not [p for p in link.parent.iterdir() if p.name.endswith(".tmp")]


def test_dangling_symlink_at_cache_path_is_an_error(tmp_path: Path) -> None:
    """A link to a missing file is a CacheError naming both paths, on read and write, and the link is kept."""
    link = cache_path()
    link.parent.mkdir(mode=0o700, parents=True)
    link.symlink_to(tmp_path / "gone" / "x.cache")
    with pytest.raises(CacheError, match="symbolic link"):
        AuthCache.open().put(make_record())
    with pytest.raises(CacheError, match="does not exist"):
        AuthCache.open().list()
    assert link.is_symlink()
    result = harvest("cache", "list")
    assert result.returncode == 3 and result.stderr.count("\n") == 1 and "symbolic link" in result.stderr


# -- 9: CR, LF, NUL and TAB -----------------------------------------------------------------------------------

_INJECTED = [
    ("cookies", 0, "name", "cookies[0].name"),
    ("cookies", 0, "value", "cookies[0] ('cf_clearance').value"),
    ("cookies", 0, "domain", "cookies[0] ('cf_clearance').domain"),
    ("cookies", 0, "path", "cookies[0] ('cf_clearance').path"),
    ("headers", None, "value", "headers['sec-ch-ua']"),
    ("headers", None, "name", "(name)"),
    ("user_agent", None, None, "user_agent"),
    ("api_key", None, None, "api_key"),
]


def _inject(data: dict, where: tuple, char: str) -> dict:
    kind, index, part, _ = where
    if kind == "cookies":
        data["cookies"][index][part] = data["cookies"][index][part] + char + "evil"
    elif kind == "headers" and part == "value":
        data["headers"]["sec-ch-ua"] += char + "X-Evil: 1"
    elif kind == "headers":
        data["headers"]["x-bad" + char] = "v"
    else:
        data[kind] = "ok" + char + "evil"
    return data


@pytest.mark.parametrize("char", ["\r", "\n", "\x00", "\t"])
@pytest.mark.parametrize("where", _INJECTED, ids=[w[3] for w in _INJECTED])
def test_control_characters_are_refused_in_every_field(where: tuple, char: str) -> None:
    """CR, LF, NUL or TAB in any cookie field, header name or value, UA or key is a RecordError naming the field."""
    data = _inject(make_record().to_json(), where, char)
    with pytest.raises(RecordError) as info:
        SessionRecord.from_json(data)
    assert where[3] in str(info.value) and "evil" not in str(info.value)
    built = SessionRecord.from_json(data, validate=False)
    with pytest.raises(RecordError):
        AuthCache.open().put(built)  # harvest stores records through put: it gets the same rule
    with pytest.raises(RecordError):
        render(built, "header")  # and an export refuses one that slipped in before the rule


def test_cli_put_with_newline_cookie_exits_2_naming_the_field() -> None:
    """`cache put` of a cookie value holding a newline exits 2 naming the field, and stores nothing."""
    data = make_record().to_json()
    data["cookies"][0]["value"] = "abc\n.evil.com\tTRUE\t/\tFALSE\t0\tinjected\tyes"
    result = harvest("cache", "put", "-", stdin=json.dumps(data))
    assert result.returncode == 2, result.stderr
    assert "cookies[0] ('cf_clearance').value" in result.stderr and "LF" in result.stderr
    assert "injected" not in result.stderr
    assert AuthCache.open().list() == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_export_of_a_legacy_bad_record_exits_2(fmt: str) -> None:
    """A record stored before the rule (written around the check) is refused at export with exit 2, nothing printed."""
    bad = SessionRecord.from_json(_inject(make_record().to_json(), _INJECTED[1], "\n"), validate=False)
    cache = AuthCache.open()
    cache._write(lambda records: records.__setitem__("cerebras", bad))
    result = harvest("cache", "get", "cerebras", "--format", fmt)
    assert result.returncode == 2 and result.stdout == ""
    assert "cookies[0] ('cf_clearance').value" in result.stderr


# -- 10: record names ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["../../etc/passwd", "a\x00b", "a\nb", "", ".hidden", "-x", "a" * 65, "a b", "é"])
def test_bad_record_names_are_refused_with_the_rule(name: str) -> None:
    """Names outside [a-z0-9][a-z0-9._-]{0,63} are refused by put, get and delete with exit 2 and the rule."""
    data = make_record().to_json() | {"provider": name}
    with pytest.raises(ValueError):
        SessionRecord.from_json(data)
    result = harvest("cache", "put", "-", stdin=json.dumps(data))
    assert result.returncode == 2 and "[a-z0-9]" in result.stderr, result.stderr
    if "\x00" not in name and name and not name.startswith("-"):
        for verb in ("get", "delete"):
            result = harvest("cache", verb, name)
            assert result.returncode == 2 and "[a-z0-9][a-z0-9._-]{0,63}" in result.stderr, (verb, result.stderr)
    with pytest.raises(ValueError):
        AuthCache.open().put(SessionRecord(provider=name))


def test_record_names_are_lower_cased() -> None:
    """`Cerebras` in put, get and delete means the record `cerebras`."""
    data = make_record().to_json() | {"provider": "Cerebras"}
    assert harvest("cache", "put", "-", stdin=json.dumps(data)).returncode == 0
    assert AuthCache.open().get("cerebras") is not None
    assert harvest("cache", "get", "CEREBRAS", "--json").returncode == 0
    assert harvest("cache", "delete", "CeReBrAs").returncode == 0


def test_harvest_name_flag_is_checked() -> None:
    """`harvest --url URL --name ../x` exits 2 with the rule before any browser starts."""
    result = harvest("--url", "http://127.0.0.1:9/", "--name", "../x")
    assert result.returncode == 2 and "[a-z0-9]" in result.stderr, result.stderr


# -- 12: unwritable places ---------------------------------------------------------------------------------------


def _one_line_exit_3(result: subprocess.CompletedProcess[str], path: Path | str) -> None:
    assert result.returncode == 3, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert str(path) in result.stderr


def _in_read_only(directory: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``harvest ARGS`` where ``directory`` cannot be written: mode 0500, and as root (whom modes do not stop)
    a read-only bind mount of it in a mount namespace of the command's own."""
    if os.geteuid() != 0:
        return harvest(*args, stdin=stdin)
    script = 'mount --bind -o ro "$0" "$0" && exec "$@"'
    return subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, str(directory), HARVEST, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_read_only_cache_dir_is_exit_3_naming_the_path() -> None:
    """A read-only cache directory: put, delete, reset and rotate-key exit 3 with one line naming the path."""
    AuthCache.open().put(make_record())
    directory = cache_path().parent
    before = cache_path().read_bytes()
    directory.chmod(0o500)
    try:
        put = _in_read_only(directory, "cache", "put", "-", stdin=json.dumps(make_record().to_json()))
        _one_line_exit_3(put, directory)
        _one_line_exit_3(_in_read_only(directory, "cache", "delete", "cerebras"), directory)
        _one_line_exit_3(_in_read_only(directory, "cache", "reset"), directory)
        _one_line_exit_3(_in_read_only(directory, "cache", "rotate-key"), directory)
        assert _in_read_only(directory, "cache", "list").returncode == 0  # reads need no write access
    finally:
        directory.chmod(0o700)
    assert cache_path().read_bytes() == before  # nothing lost or half-written


@pytest.mark.parametrize("verb", [("put", "-"), ("delete", "cerebras"), ("reset",), ("list",), ("get", "cerebras")])
def test_cache_parent_is_a_regular_file_is_exit_3(verb: tuple[str, ...], tmp_path: Path) -> None:
    """A regular file where the cache directory belongs: every verb exits 3 with one line naming a path."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    path = blocker / "sub" / "s.cache"
    env_stdin = json.dumps(make_record().to_json()) if verb[0] == "put" else None
    result = subprocess.run(
        [HARVEST, "--cache", str(path), "cache", *verb],
        input=env_stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if verb[0] in ("list", "get") and result.returncode in (0, 1):
        pytest.fail(f"{verb}: {result.returncode} {result.stderr}")
    _one_line_exit_3(result, blocker)


def test_key_dir_blocked_is_exit_3_naming_the_key_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A key file whose directory cannot be made (a file is in the way) is exit 3 naming the key path."""
    blocker = tmp_path / "keyblock"
    blocker.write_text("x")
    monkeypatch.setenv("HARVEST_CACHE_KEY_FILE", str(blocker / "cache.key"))
    _one_line_exit_3(harvest("cache", "put", "-", stdin=json.dumps(make_record().to_json())), blocker)
    with pytest.raises(CacheError):
        AuthCache.open().put(make_record())


# -- 13: out-of-range input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("expires_at", 1e300),
        ("harvested_at", 1e20),
        ("expires_at", -1e20),
        ("harvested_at", "0001-01-01T00:00:00+01:00"),
        ("expires_at", "9999-12-31T23:59:59-01:00"),
        ("cookie.expires", 1e300),
        ("extras", "deep"),
    ],
)
def test_out_of_range_input_is_exit_2_one_line(key: str, value: object) -> None:
    """Times past year 9999 or before 1970 and extras nested 300 deep are exit 2 with one line, not a traceback."""
    data = make_record().to_json()
    if key == "cookie.expires":
        data["cookies"][0]["expires"] = value
    elif key == "extras":
        deep: dict = {}
        for _ in range(300):
            deep = {"x": deep}
        data["extras"] = deep
    else:
        data[key] = value
    with pytest.raises(ValueError):
        SessionRecord.from_json(data)
    result = harvest("cache", "put", "-", stdin=json.dumps(data))
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().count("\n") <= 1, result.stderr


def test_direct_records_with_out_of_range_parts_are_refused_by_put() -> None:
    """Records built in Python (as a harvest does) with deep extras or a NaN cookie expiry are refused by put."""
    deep: dict = {}
    for _ in range(40):
        deep = {"x": deep}
    with pytest.raises(RecordError, match="extras"):
        AuthCache.open().put(SessionRecord(provider="x", extras=deep))
    with pytest.raises(RecordError, match="expires"):
        AuthCache.open().put(SessionRecord(provider="x", cookies=[Cookie("a", "b", expires=float("nan"))]))


# -- 14: KDF parameters --------------------------------------------------------------------------------------------


def _with_header(header: dict) -> bytes:
    """A cache file whose (CRC-valid) header says ``header``; the body is junk."""
    raw = json.dumps(header, sort_keys=True).encode()
    prefix = b"HARVEST\x00" + struct.pack(">BH", 1, len(raw)) + raw + struct.pack(">I", zlib.crc32(raw))
    return prefix + os.urandom(12) + os.urandom(64)


_SALT = base64.b64encode(b"s" * 16).decode()


@pytest.mark.parametrize(
    "params",
    [
        {"n": "16384", "r": 8, "p": 1},
        {"n": 16384.0, "r": 8, "p": 1},
        {"n": -16384, "r": 8, "p": 1},
        {"n": 16385, "r": 8, "p": 1},
        {"n": 2**40, "r": 8, "p": 1},
        {"n": 16384, "r": 8, "p": 2000},
        {"n": 16384, "r": 0, "p": 1},
        {"n": True, "r": 8, "p": 1},
        {"n": 2**18, "r": 8, "p": 16},
        {"n": 16384, "r": 8, "p": 1, "salt": 5},
        {"n": 16384, "r": 8, "p": 1, "salt": "!!"},
        {"n": 16384, "r": 8, "p": 1, "salt": ""},
    ],
)
def test_hostile_kdf_params_are_refused_before_any_work(params: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scrypt parameters of the wrong type or beyond sane bounds are a CacheCorruptError in well under a second."""
    monkeypatch.setenv("HARVEST_CACHE_PASSPHRASE", "pass")
    path = cache_path()
    path.parent.mkdir(mode=0o700, parents=True)
    path.write_bytes(_with_header({"kdf": "scrypt", "key_id": "x", "salt": _SALT} | params))
    start = time.monotonic()
    with pytest.raises(CacheCorruptError):
        AuthCache.open().get("x")
    assert time.monotonic() - start < 0.5
    result = harvest("cache", "list")
    assert result.returncode == 3 and "Traceback" not in result.stderr


# -- 16: stale temp files --------------------------------------------------------------------------------------------


def test_stale_temp_files_of_dead_writers_are_removed_by_the_next_writer() -> None:
    """Temp files whose writer pid is gone (or unnamed, from older builds) go at the next write; a live one stays."""
    cache = AuthCache.open()
    cache.put(make_record())
    directory = cache_path().parent
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = directory / f".{cache_path().name}.{dead.pid}.abcd.tmp"
    legacy = directory / f".{cache_path().name}.k3j4h5.tmp"
    live = directory / f".{cache_path().name}.1.efgh.tmp"  # pid 1 is alive
    for path in (stale, legacy, live):
        path.write_bytes(b"x" * 1000)
    cache.put(make_record(provider="deepinfra"))
    assert not stale.exists() and not legacy.exists() and live.exists()


# -- 19: directory modes ----------------------------------------------------------------------------------------------


def test_every_directory_we_create_is_0700(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache dir and its missing parents, the lock dir and the key dir are all made 0700, lock first or not."""
    os.umask(0o022)
    base = tmp_path / "fresh"
    path = base / "a" / "b" / "s.cache"
    monkeypatch.setenv("HARVEST_CACHE_KEY_FILE", str(base / "k1" / "k2" / "cache.key"))
    cache = AuthCache.open(path)
    with cache.harvest_lock("cerebras", timeout=5):  # what a harvest does first, in a fresh dir
        pass
    cache.put(make_record())
    for directory in (base, base / "a", base / "a" / "b", base / "a" / "b" / ".locks", base / "k1", base / "k1" / "k2"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
