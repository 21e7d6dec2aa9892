"""Errors raised by the cache.

Every error has one root, so a caller can catch them all::

    CacheError
    ├── CacheCorruptError    the file is tampered, truncated or not a cache file
    ├── WrongKeyError        the file was written under another key, or no key was found
    ├── CacheLockTimeout     another process held the lock past the deadline
    ├── CacheConflictError   the stored blob changed during a read-modify-write (a lock was lost)
    └── CacheUnavailableError  the storage server cannot be reached, refuses us, or timed out

A file that fails to decrypt is never overwritten; the message says how to recover.
"""

from __future__ import annotations

from pathlib import Path


class CacheError(Exception):
    """Root of every error the cache raises."""

    def __init__(self, message: str, *, path: Path | None = None, location: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        #: where the cache lives (a path, or a URL without its password)
        self.location = location if location is not None else (str(path) if path is not None else None)


class CacheCorruptError(CacheError):
    """The cache file is tampered, truncated or not a cache file at all."""


class WrongKeyError(CacheError):
    """The cache file was encrypted under another key, or no key is configured."""


class CacheLockTimeout(CacheError):
    """The inter-process lock could not be taken before the deadline."""


class CacheConflictError(CacheError):
    """The stored blob changed between our read and our write; nothing was written."""


class CacheUnavailableError(CacheError):
    """The storage server is unreachable, refused our credentials, or timed out (it is named, never its password)."""
