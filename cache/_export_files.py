"""Writing exports to a directory: one private file per record, replaced atomically.

``harvest cache export DIR`` and the daemon's ``[daemon] export`` both land here, so a tool that only reads
files (g4f's cookies directory, a cron job, a shell script) always finds a whole, fresh file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from ._export import EXTENSIONS, ExportError, render
from ._record import SessionRecord
from ._storage import atomic_write


def export_path(directory: Path, name: str, fmt: str) -> Path:
    """Where the export of record ``name`` in ``fmt`` goes: ``DIR/<name>.<ending>``."""
    # Names are checked by cache/_record.py; a separator or a leading dot would still leave DIR or hide the file.
    if not name or "/" in name or "\0" in name or name.startswith("."):
        raise ExportError(f"{name!r} is not a record name that can be a file name")
    return directory / f"{name}.{EXTENSIONS[fmt]}"


def prepare_directory(directory: Path) -> Path:
    """Create ``directory`` (0700) if needed and check that only its owner can write to it.

    Raises:
        ExportError: it is not a directory, not ours, or group- or world-writable (someone else could swap a
            file in before a tool reads it).
    """
    directory = directory.expanduser()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.stat()
    except OSError as exc:
        raise ExportError(f"cannot create the export directory {directory}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise ExportError(f"{directory} is not a directory")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ExportError(
            f"{directory} is writable by other users (mode {stat.S_IMODE(info.st_mode):o}); "
            f"exports hold secrets: chmod 700 {directory}"
        )
    if info.st_uid != os.geteuid():
        raise ExportError(f"{directory} belongs to another user; export into a directory of your own")
    return directory


def export_records(records: Iterable[SessionRecord], directory: Path, fmt: str) -> list[Path]:
    """Write each record to ``DIR/<name>.<ending>`` in ``fmt``, atomically and mode 0600; return the paths.

    Every record is rendered before the first file is written, so a record that cannot be exported leaves the
    directory as it was.

    Raises:
        ExportError: a bad directory, or a record with a value the format cannot carry.
        ValueError: an unknown format.
    """
    if fmt not in EXTENSIONS:
        raise ValueError(f"unknown format {fmt!r}")
    directory = prepare_directory(directory)
    rendered = [(export_path(directory, r.provider, fmt), render(r, fmt).encode()) for r in records]
    for path, data in rendered:
        try:
            atomic_write(path, data)
        except OSError as exc:
            raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None
    return [path for path, _ in rendered]
