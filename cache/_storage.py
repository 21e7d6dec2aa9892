"""File storage under the cache: atomic writes, inter-process locks, cheap change detection.

Kept apart from crypto and records so a second backend (Redis, say) is one new module.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from ._exceptions import CacheError, CacheLockTimeout

StatToken = tuple[int, int, int, int]  # (inode, size, mtime_ns, ctime_ns): changes whenever the file is replaced


class Storage(Protocol):
    """What ``AuthCache`` needs from a place to keep one encrypted blob."""

    def load(self) -> tuple[bytes | None, StatToken | None]: ...
    def stat(self) -> StatToken | None: ...
    def save(self, data: bytes) -> None: ...
    def lock(self, timeout: float) -> contextlib.AbstractContextManager[None]: ...


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old bytes or the new ones, never a mix.

    Temp file in the same directory (so ``os.replace`` is a rename on one filesystem), fsync it, replace,
    then fsync the directory so the rename itself survives a power cut.
    """
    import tempfile  # only writers need it; readers stay lean

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class FileStorage:
    """One file on disk, with a sibling ``.lock`` file for the inter-process lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Guards every read-modify-write of the cache file across processes (and threads: filelock is
        # reentrant per thread, so each thread gets its own lock object).
        self._lock_path = path.with_name(path.name + ".lock")

    def ensure_dir(self) -> None:
        """Create the cache directory with mode 0700 if it is missing."""
        if not self.path.parent.exists():
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    def stat(self) -> StatToken | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def load(self) -> tuple[bytes | None, StatToken | None]:
        try:
            with open(self.path, "rb") as handle:
                st = os.fstat(handle.fileno())
                data = handle.read()
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            raise CacheError(f"cannot read the cache file {self.path}: {exc.strerror}", path=self.path) from None
        return data, (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def save(self, data: bytes) -> None:
        self.ensure_dir()
        try:
            atomic_write(self.path, data)
        except OSError as exc:
            raise CacheError(f"cannot write the cache file {self.path}: {exc.strerror}", path=self.path) from None

    def lock(self, timeout: float) -> contextlib.AbstractContextManager[None]:
        self.ensure_dir()
        return _hold(
            self._lock_path,
            timeout,
            f"another process held the cache lock {self._lock_path} for more than {timeout:g} s",
            self.path,
        )

    @contextlib.contextmanager
    def named_lock(self, name: str, timeout: float) -> Iterator[None]:
        """A separate inter-process lock per name (used for single-flight harvests of one provider)."""
        lock_dir = self.path.parent / ".locks"
        lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        with _hold(
            lock_dir / f"{safe}.lock",
            timeout,
            f"another harvest of {name!r} held its lock for more than {timeout:g} s",
            self.path,
        ):
            yield


@contextlib.contextmanager
def _hold(lock_path: Path, timeout: float, message: str, cache_path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path``; raise ``CacheLockTimeout`` with ``message`` on deadline."""
    # filelock costs ~25 ms to import and only writers need it, so readers never load it.
    from filelock import FileLock, Timeout

    lock = FileLock(lock_path, timeout=timeout, mode=0o600, thread_local=True)
    try:
        lock.acquire()
    except Timeout:
        raise CacheLockTimeout(message, path=cache_path) from None
    try:
        yield
    finally:
        lock.release()
