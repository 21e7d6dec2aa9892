"""The daemon's status: per-provider state in memory, a small JSON file beside the cache, and the report.

The file holds no secrets (times, counts, error messages that were already redacted) and is replaced
atomically (temp file, fsync, ``os.replace``), so ``harvest status`` in another process always reads a whole
document. ``build_report`` merges it with the cache's records; ``harvest status`` and ``GET /status`` both
serve its result, so they cannot disagree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from cache import SessionRecord, atomic_write, format_time, parse_time, utcnow

STATUS_VERSION = 1
STATUS_SUFFIX = ".status.json"


def status_path(cache_path: Path) -> Path:
    """Return the status file that belongs to a cache file."""
    return cache_path.with_name(cache_path.name + STATUS_SUFFIX)


@dataclass(slots=True)
class ProviderState:
    """What the daemon knows about one provider; replaced field by field, never grown."""

    name: str
    last_success: datetime | None = None
    last_failure: datetime | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    next_run: datetime | None = None
    running: bool = False
    harvests: int = 0
    failures: int = 0
    record_harvested_at: datetime | None = None
    record_expires_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form written to the status file."""
        return {
            "last_success": format_time(self.last_success),
            "last_failure": format_time(self.last_failure),
            "last_error": self.last_error,
            "consecutive_failures": self.consecutive_failures,
            "next_run": format_time(self.next_run),
            "running": self.running,
            "harvests": self.harvests,
            "failures": self.failures,
            "record_harvested_at": format_time(self.record_harvested_at),
            "record_expires_at": format_time(self.record_expires_at),
        }


def status_document(
    states: Mapping[str, ProviderState], *, pid: int, started_at: datetime, running: bool
) -> dict[str, Any]:
    """Return the status file's document for the daemon's current state."""
    return {
        "version": STATUS_VERSION,
        "pid": pid,
        "running": running,
        "started_at": format_time(started_at),
        "updated_at": format_time(utcnow()),
        "providers": {name: states[name].to_json() for name in sorted(states)},
    }


def write_status(path: Path, document: Mapping[str, Any]) -> None:
    """Replace the status file atomically: a reader sees the whole old or the whole new document."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    atomic_write(path, data)


class StatusFileError(ValueError):
    """The status file is JSON but not a status document (hand-edited, or written by something else)."""


def read_status(path: Path) -> dict[str, Any] | None:
    """Return the status document, or None if there is none (or it is unreadable).

    Raises:
        StatusFileError: the file is JSON of the wrong shape (the message names the path and the key).
    """
    try:
        document = orjson.loads(path.read_bytes())
    except (FileNotFoundError, orjson.JSONDecodeError, OSError):
        return None
    if not isinstance(document, dict):
        return None
    try:
        return check_status(document)
    except StatusFileError as exc:
        raise StatusFileError(f"{path}: not a status document: {exc}") from None


_TIME_KEYS = ("last_success", "last_failure", "next_run", "record_harvested_at", "record_expires_at")
_COUNT_KEYS = ("consecutive_failures", "harvests", "failures")


def check_status(document: Mapping[str, Any]) -> dict[str, Any]:
    """Check a status document's types and times (pure); return it with every time normalised.

    Raises:
        StatusFileError: a key has the wrong type or a time is not a representable ISO-8601 time.
    """
    out = dict(document)
    for key in ("started_at", "updated_at"):
        out[key] = _time(document.get(key), key)
    if not isinstance(document.get("running", False), bool):
        raise StatusFileError("running must be true or false")
    pid = document.get("pid")
    if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int)):
        raise StatusFileError("pid must be an integer")
    providers = document.get("providers") or {}
    if not isinstance(providers, dict):
        raise StatusFileError("providers must be an object of provider names")
    checked: dict[str, Any] = {}
    for name, entry in providers.items():
        if not isinstance(entry, dict):
            raise StatusFileError(f"providers.{name} must be an object")
        row = dict(entry)
        for key in _TIME_KEYS:
            row[key] = _time(entry.get(key), f"providers.{name}.{key}")
        for key in _COUNT_KEYS:
            value = entry.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
                raise StatusFileError(f"providers.{name}.{key} must be a count")
        if not isinstance(entry.get("running", False), bool):
            raise StatusFileError(f"providers.{name}.running must be true or false")
        if not isinstance(entry.get("last_error"), str | None):
            raise StatusFileError(f"providers.{name}.last_error must be a string")
        checked[name] = row
    out["providers"] = checked
    return out


def _time(value: Any, key: str) -> str | None:
    try:
        return format_time(parse_time(value, key))
    except (ValueError, OverflowError, OSError):  # OverflowError, OSError: a timestamp past the year 9999
        raise StatusFileError(f"{key}: {repr(value)[:60]} is not a time") from None


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def build_report(
    document: Mapping[str, Any] | None,
    records: Mapping[str, SessionRecord] | None,
    *,
    now: datetime | None = None,
    check_pid: bool = True,
) -> dict[str, Any]:
    """Merge the daemon's status document with the cache's records into the status report.

    Args:
        document: the status file's document (None if the daemon never ran).
        records: the cache's records by provider (None if the cache could not be read: the status file's
            copy of each record's expiry is used instead).
        now: the time to judge expiry against.
        check_pid: whether to check that the daemon's pid is alive (False when the daemon reports itself).
    """
    now = now or utcnow()
    document = document or {}
    providers: Mapping[str, Any] = document.get("providers") or {}
    names = sorted(set(providers) | set(records or {}))
    rows = []
    for name in names:
        entry: Mapping[str, Any] = providers.get(name) or {}
        record = (records or {}).get(name)
        if record is not None:
            harvested_at: datetime | None = record.harvested_at
            expires_at: datetime | None = record.expires_at
        else:
            harvested_at = parse_time(entry.get("record_harvested_at"), "record_harvested_at")
            expires_at = parse_time(entry.get("record_expires_at"), "record_expires_at")
            if records is not None:
                harvested_at = expires_at = None  # the cache was read and has no record
        if harvested_at is None:
            record_state = "missing"
        elif expires_at is not None and expires_at <= now:
            record_state = "expired"
        else:
            record_state = "fresh"
        rows.append(
            {
                "provider": name,
                "scheduled": name in providers,
                "record": record_state,
                "record_harvested_at": format_time(harvested_at),
                "record_expires_at": format_time(expires_at),
                "last_success": entry.get("last_success"),
                "last_failure": entry.get("last_failure"),
                "last_error": entry.get("last_error"),
                "consecutive_failures": entry.get("consecutive_failures", 0),
                "next_run": entry.get("next_run"),
                "running": bool(entry.get("running", False)),
                "harvests": entry.get("harvests", 0),
                "failures": entry.get("failures", 0),
            }
        )
    pid = document.get("pid")
    alive = bool(document.get("running")) and (not check_pid or _pid_alive(pid))
    return {
        "daemon": {
            "running": alive,
            "pid": pid if alive else None,
            "started_at": document.get("started_at"),
            "updated_at": document.get("updated_at"),
        },
        "providers": rows,
    }


HEARTBEAT_INTERVAL = 5.0  # seconds between a daemon's heartbeats on a shared (Redis) cache
HEARTBEAT_TTL = 20.0  # a heartbeat not renewed for this long drops out: the daemon is gone


def heartbeat_document(
    states: Mapping[str, ProviderState], *, node: str, pid: int, version: str, started_at: datetime
) -> dict[str, Any]:
    """What a daemon publishes about itself on a shared cache: node, pid, version, providers, last refreshes."""
    return {
        "node": node,
        "pid": pid,
        "version": version,
        "started_at": format_time(started_at),
        "updated_at": format_time(utcnow()),
        "providers": {
            name: {
                "last_success": format_time(state.last_success),
                "record_harvested_at": format_time(state.record_harvested_at),
                "harvests": state.harvests,
            }
            for name, state in sorted(states.items())
        },
    }


def add_cluster(report: dict[str, Any], heartbeats: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Add every live daemon (``daemons``) and, per record, the node that refreshed it (``refreshed_by``)."""
    if heartbeats is None:
        return report
    report["daemons"] = heartbeats
    for row in report["providers"]:
        row["refreshed_by"] = None
        for beat in heartbeats:
            entry = (beat.get("providers") or {}).get(row["provider"]) or {}
            if row["record_harvested_at"] and entry.get("record_harvested_at") == row["record_harvested_at"]:
                row["refreshed_by"] = f"{beat.get('node')}:{beat.get('pid')}"
                break
    return report
