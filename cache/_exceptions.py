"""Errors raised by the cache.

Every error has one root, so a caller can catch them all::

    CacheError
    ├── CacheCorruptError    the file is tampered, truncated or not a cache file
    ├── WrongKeyError        the file was written under another key, or no key was found
    └── CacheLockTimeout     another process held the lock past the deadline

A file that fails to decrypt is never overwritten; the message says how to recover.
"""

from __future__ import annotations

from pathlib import Path


class CacheError(Exception):
    """Root of every error the cache raises."""

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


class CacheCorruptError(CacheError):
    """The cache file is tampered, truncated or not a cache file at all."""


class WrongKeyError(CacheError):
    """The cache file was encrypted under another key, or no key is configured."""


class CacheLockTimeout(CacheError):
    """The inter-process lock could not be taken before the deadline."""
