"""Every `harvest` verb fails with one line and its documented exit code, never a traceback (issue 9)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from cache import AuthCache, Cookie, SessionRecord, utcnow
from harvester.cli import _exit

ROOT = Path(__file__).resolve().parents[2]
HARVEST = str(ROOT / ".venv" / "bin" / "harvest")


def harvest(*args: str, env: dict[str, str] | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run `harvest ARGS` to completion with the test's environment (plus ``env``)."""
    return subprocess.run(
        [HARVEST, *args],
        env={**os.environ, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single stderr line of a failed command (fails on a traceback or several lines)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def stored() -> AuthCache:
    """A cache under the test's key file holding one record."""
    cache = AuthCache.open()
    cache.put(SessionRecord(provider="cerebras", cookies=[Cookie("cf_clearance", "v")], harvested_at=utcnow()))
    return cache


# Verbs that read the cache, and those that only open it (a malformed key fails them at the open).
READERS = [
    ("status",),
    ("daemon",),
    ("chat", "--provider", "cerebras", "hi"),
    ("cache", "list"),
    ("cache", "get", "cerebras"),
    ("cache", "get", "cerebras", "--format", "curl", "--fresh"),
    ("cache", "delete", "cerebras"),
    ("cache", "rotate-key"),
    ("cache", "put", "-"),
]
OPENERS = [
    ("models", "--provider", "cerebras"),
    ("image", "--provider", "deepinfra", "a cat"),
    ("--provider", "cerebras"),
    ("cache", "path"),
]
WRONG_KEY = "A" * 43 + "="  # well-formed, not the key the cache was written with
MALFORMED_KEY = "zzz"


@pytest.mark.parametrize(
    ("args", "key"),
    [(a, MALFORMED_KEY) for a in READERS + OPENERS] + [(a, WRONG_KEY) for a in READERS],
    ids=lambda value: " ".join(value) if isinstance(value, tuple) else ("malformed" if value == "zzz" else "wrong"),
)
def test_a_wrong_key_is_exit_3_and_one_line(stored: AuthCache, args: tuple[str, ...], key: str) -> None:
    """A malformed or wrong $HARVEST_CACHE_KEY makes every verb that opens the cache exit 3 with one line."""
    record = orjson.dumps({"provider": "x", "cookies": []}).decode()
    result = harvest(*args, env={"HARVEST_CACHE_KEY": key}, stdin=record)
    line = one_line_error(result)
    assert result.returncode == _exit.CACHE_ERROR, result.stderr
    assert "key" in line


def test_a_non_utf8_config_is_exit_2_and_one_line(isolated_env: Path) -> None:
    """A config file that is not UTF-8 stops `harvest daemon` with exit 2 and one line naming the file."""
    config = Path(os.environ["HARVEST_CONFIG"])
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_bytes(b'[providers.cerebras]\nproxy = "http://\xff\xfe"\n')
    result = harvest("daemon")
    line = one_line_error(result)
    assert result.returncode == _exit.USAGE
    assert str(config) in line and "UTF-8" in line


@pytest.mark.parametrize(
    "document",
    [
        {"providers": [1, 2]},
        {"providers": {"cerebras": 7}},
        {"providers": {"cerebras": {"last_success": 1e20}}},
        {"providers": {"cerebras": {"next_run": "9999-12-31T23:59:59-01:00"}}},
        {"providers": {"cerebras": {"harvests": "many"}}},
        {"started_at": 1e300, "providers": {}},
        {"pid": "me", "running": True},
    ],
    ids=repr,
)
def test_a_bad_status_file_is_exit_3_and_one_line(stored: AuthCache, document: dict[str, object]) -> None:
    """`harvest status` (table and --json) exits 3 with one line on a status file of the wrong shape."""
    stored.path.with_name(stored.path.name + ".status.json").write_bytes(orjson.dumps(document))
    for args in (("status",), ("status", "--json")):
        result = harvest(*args)
        line = one_line_error(result)
        assert result.returncode == _exit.CACHE_ERROR
        assert "status" in line and result.stdout == ""


def test_sigint_while_loading_exits_130_quietly(stored: AuthCache) -> None:
    """Ctrl-C in the first 0.1 s of our code (the imports, start-up) exits 130 with no traceback or "Aborted!"."""
    # -X importtime reports each import on stderr as it finishes. harvester.cli._exit is the first import
    # ``main`` makes after it set its Ctrl-C handler, so the signal lands in our start-up, not in Python's own
    # or in the console script's lines before ``main`` (which no program can make quiet).
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    for attempt in range(16):
        process = subprocess.Popen(
            [HARVEST, "status"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        assert process.stderr is not None
        for line in process.stderr:
            if line.rstrip().endswith("| harvester.cli._exit"):
                break
        time.sleep(0.1 * attempt / 16)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
        said = [line for line in err.splitlines() if line.strip() and not line.startswith("import time:")]
        assert process.returncode == _exit.INTERRUPTED, (attempt, process.returncode, err[-2000:])
        assert said == [], (attempt, said)


@pytest.mark.parametrize("args", READERS, ids=" ".join)
def test_a_corrupt_cache_is_exit_3_and_one_line(stored: AuthCache, args: tuple[str, ...]) -> None:
    """A cache file that is not a cache file makes every verb that reads it exit 3 with one line naming the path."""
    Path(stored.path).write_bytes(b"this is not a harvest cache file\n" * 4)
    record = orjson.dumps({"provider": "x", "cookies": []}).decode()
    result = harvest(*args, stdin=record)
    line = one_line_error(result)
    assert result.returncode == _exit.CACHE_ERROR, result.stderr
    assert str(stored.path) in line or "cache" in line
