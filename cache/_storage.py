"""Where the encrypted cache blob lives: the ``Storage`` protocol and its file implementation.

``AuthCache`` does the crypto and the records; a storage only keeps one opaque blob, says cheaply whether it
changed, replaces it atomically under a lock, and offers named locks for single-flight harvests. A second backend
(``RedisStorage``) is one new module that passes the same contract tests (tests/cache/test_storage_contract.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from ._exceptions import CacheConflictError, CacheError, CacheLockTimeout

#: An opaque "which version of the blob is this" token: equal tokens mean equal bytes.
Version = Hashable
StatToken = tuple[int, int, int, int]  # (inode, size, mtime_ns, ctime_ns): changes whenever the file is replaced


class Storage(Protocol):
    """What ``AuthCache`` needs from a place that keeps one encrypted blob.

    A storage whose server does the compare-and-set (Redis) can offer more: see ``CasStorage``.
    """

    @property
    def location(self) -> str:
        """Where the blob lives, for messages: a path, or a URL without its password."""
        ...

    def version(self) -> Version | None:
        """A cheap token that changes whenever the blob is replaced; None when nothing is stored."""
        ...

    def load(self) -> tuple[bytes | None, Version | None]:
        """The blob and its version token, read together; ``(None, None)`` when nothing is stored."""
        ...

    def save(self, data: bytes, expected: Version | None) -> Version:
        """Replace the blob atomically; called under ``lock()``.

        ``expected`` is the version the caller read (None: nothing was stored). If the blob changed since, nothing
        is written and ``CacheConflictError`` is raised, so a lock lost to a timeout cannot lose an update.
        Returns the new version token.
        """
        ...

    def move_aside(self) -> str | None:
        """Keep the current blob under a new name and store nothing; return that name (None if nothing stored)."""
        ...

    def lock(self, timeout: float) -> contextlib.AbstractContextManager[None]:
        """The exclusive writer lock; ``CacheLockTimeout`` after ``timeout`` seconds."""
        ...

    def named_lock(self, name: str, timeout: float) -> contextlib.AbstractContextManager[None]:
        """A separate exclusive lock per name (single-flight harvests); ``CacheLockTimeout`` on deadline."""
        ...

    def close(self) -> None:
        """Release connections and background threads (a no-op for a file)."""
        ...


@runtime_checkable
class CasStorage(Storage, Protocol):
    """A ``Storage`` whose server compares and sets in one step (Redis), which ``AuthCache`` uses when it is one.

    * ``save(data, expected, unlocked=True)`` is atomic without the writer lock, and refused (``CacheConflictError``)
      while another writer holds the lock: ``AuthCache`` writes on a current view without the lock (after a
      conflict it takes the lock, so a writer under the lock is never starved).
    * ``load_known()``: the blob at the version ``version()`` last answered, from a local copy where the storage
      keeps one (``AuthCache`` reloads a changed view with it; a fresh read still calls ``load()``).
    """

    def save(self, data: bytes, expected: Version | None, *, unlocked: bool = False) -> Version:
        """``Storage.save``; ``unlocked``: the caller does not hold ``lock()``."""
        ...

    def load_known(self) -> tuple[bytes | None, Version | None]:
        """The blob and version at the version ``version()`` last answered (else as ``load()``)."""
        ...


def make_dirs(path: Path) -> None:
    """Create ``path`` and any missing parents, each with mode 0700 (``mkdir(parents=True)`` uses 0777 for parents)."""
    missing = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            if not directory.is_dir():
                raise
    if not path.is_dir():
        raise NotADirectoryError(20, "Not a directory", str(path))


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old bytes or the new ones, never a mix.

    Temp file ``.<name>.<pid>.<random>.tmp`` in the same directory (so ``os.replace`` is a rename on one
    filesystem; the pid lets the next writer remove it if this process dies), fsync it, replace, then fsync the
    directory so the rename itself survives a power cut.
    """
    import tempfile  # only writers need it; readers stay lean

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
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


def remove_stale_temps(path: Path) -> int:
    """Remove ``.<name>.<pid>.*.tmp`` files next to ``path`` whose writer process is gone; return how many.

    Call it under the writer lock: only a writer holding it makes such files, so none is half-way through a rename.
    """
    prefix = f".{path.name}."
    removed = 0
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return 0
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid_text = name[len(prefix) :].split(".", 1)[0]
        if pid_text.isdigit() and _alive(int(pid_text)) and int(pid_text) != os.getpid():
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process holds that pid
    return True


@contextlib.contextmanager
def os_errors(action: str, path: Path | str) -> Iterator[None]:
    """Turn an ``OSError`` into one ``CacheError`` line naming the path (exit 3 in the CLI, no traceback)."""
    try:
        yield
    except OSError as exc:
        where = exc.filename if isinstance(exc.filename, str) else str(path)
        reason = exc.strerror or type(exc).__name__
        raise CacheError(f"cannot {action} {where}: {reason}", path=Path(path)) from None


class FileStorage:
    """One file on disk, with a sibling ``.lock`` file for the inter-process lock.

    A symlink at the path is followed: writes replace the link's target atomically in the target's own
    directory, and the link stays. A link to nothing is an error, not an empty cache.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        # The in-process side of each file lock (by lock file name): threads of this process wait on it, woken
        # as soon as it is free, instead of polling the file lock against one another.
        self._thread_locks: dict[str, ThreadLock] = {}

    @property
    def location(self) -> str:
        return str(self.path)

    def _thread_lock(self, key: str) -> ThreadLock:
        import threading  # writers only: a read never takes a lock

        # dict.setdefault is atomic: two threads asking at once get the same lock.
        return self._thread_locks.setdefault(key, threading.RLock())

    def _target(self) -> Path:
        """The real file behind ``path`` (itself unless it is a symlink); a dangling link raises."""
        if not os.path.islink(self.path):
            return self.path
        target = Path(os.path.realpath(self.path))
        if not target.exists():
            raise CacheError(
                f"the cache path {self.path} is a symbolic link to {target}, which does not exist; "
                "fix or remove the link",
                path=self.path,
            )
        return target

    def ensure_dir(self) -> None:
        """Create the cache directory (and its missing parents) with mode 0700."""
        with os_errors("create the cache directory", self.path.parent):
            make_dirs(self.path.parent)

    def version(self) -> StatToken | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._target()  # a dangling symlink raises here
            return None
        except OSError as exc:
            raise CacheError(
                f"cannot read the cache file {self.path}: {exc.strerror or type(exc).__name__}", path=self.path
            ) from None
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    stat = version  # the name before the Storage protocol was made true

    def load(self) -> tuple[bytes | None, StatToken | None]:
        try:
            with open(self.path, "rb") as handle:
                st = os.fstat(handle.fileno())
                data = handle.read()
        except FileNotFoundError:
            self._target()
            return None, None
        except OSError as exc:
            raise CacheError(
                f"cannot read the cache file {self.path}: {exc.strerror or type(exc).__name__}", path=self.path
            ) from None
        return data, (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def save(self, data: bytes, expected: Version | None = None) -> StatToken:
        target = self._target()
        if self.version() != expected:
            raise CacheConflictError(f"{self.path} changed while it was being updated", path=self.path)
        with os_errors("write the cache file", target):
            make_dirs(target.parent)
            remove_stale_temps(target)
            atomic_write(target, data)
        token = self.version()
        assert token is not None
        return token

    def move_aside(self) -> str | None:
        from datetime import UTC, datetime

        target = self._target()
        if self.version() is None:
            return None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        moved = target.with_name(f"{target.name}.bad-{stamp}")
        with os_errors("move aside the cache file", target):
            os.replace(target, moved)
        return str(moved)

    def lock(self, timeout: float) -> contextlib.AbstractContextManager[None]:
        target = self._target()
        return _hold(
            target.with_name(target.name + ".lock"),
            timeout,
            f"another process held the cache lock {target}.lock for more than {timeout:g} s",
            self.path,
            self._thread_lock(""),
        )

    def named_lock(self, name: str, timeout: float) -> contextlib.AbstractContextManager[None]:
        """A separate inter-process lock per name (used for single-flight harvests of one provider)."""
        lock_dir = self._target().parent / ".locks"
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).lstrip(".") or "_"
        return _hold(
            lock_dir / f"{safe}.lock",
            timeout,
            f"another harvest of {name!r} held its lock for more than {timeout:g} s",
            self.path,
            self._thread_lock("name:" + safe),
        )

    def close(self) -> None:
        pass


@contextlib.contextmanager
def _hold(lock_path: Path, timeout: float, message: str, cache_path: Path, thread_lock: ThreadLock) -> Iterator[None]:
    """Hold ``thread_lock`` and an exclusive ``flock`` on ``lock_path``; raise ``CacheLockTimeout`` with ``message``
    once ``timeout`` seconds have passed (a negative one waits for ever)."""
    # filelock costs ~25 ms to import and only writers need it, so readers never load it.
    import time

    from filelock import FileLock, Timeout

    deadline = time.monotonic() + timeout
    # Threads of this process queue on the thread lock (reentrant, as the file lock is per thread) and take the
    # file lock one at a time: filelock would make each of them poll, and sleep 50 ms per try, while another
    # thread holds it (four harvests saving at once waited 0.13-0.18 s instead of 0.04).
    if not thread_lock.acquire(timeout=-1 if timeout < 0 else timeout):
        raise CacheLockTimeout(message, path=cache_path)
    try:
        # Guards every read-modify-write of the cache across processes.
        remaining = -1.0 if timeout < 0 else max(0.0, deadline - time.monotonic())
        lock = FileLock(lock_path, timeout=remaining, mode=0o600, thread_local=True)
        with os_errors("take the lock", lock_path):
            make_dirs(lock_path.parent)
            try:
                # Another process holds it: look again every 10 ms (filelock's default is 50).
                lock.acquire(poll_interval=_LOCK_POLL)
            except Timeout:
                raise CacheLockTimeout(message, path=cache_path) from None
        try:
            yield
        finally:
            lock.release()
    finally:
        thread_lock.release()


_LOCK_POLL = 0.01  # seconds between tries of a file lock another process holds


class ThreadLock(Protocol):
    """What ``_hold`` uses of a ``threading.RLock`` (whose class is not importable for annotations)."""

    def acquire(self, blocking: bool = ..., timeout: float = ...) -> bool: ...

    def release(self) -> None: ...
