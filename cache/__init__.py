"""The encrypted, shared session cache.

>>> from cache import AuthCache, SessionRecord, Cookie
>>> c = AuthCache.open()
>>> c.put(SessionRecord(provider="cerebras", cookies=[Cookie("cf_clearance", "…", ".example.com")]))
>>> c.get("cerebras")

It knows nothing of browsers or HTTP, and imports neither: other tools read it on every request.
"""

from __future__ import annotations

from ._cache import AuthCache, open_storage
from ._exceptions import (
    CacheConflictError,
    CacheCorruptError,
    CacheError,
    CacheLockTimeout,
    CacheUnavailableError,
    WrongKeyError,
)
from ._keys import KeySource, default_cache_location, default_cache_path, default_key_file, generate_key
from ._record import NAME_RULE, Cookie, RecordError, SessionRecord, format_time, normalize_name, parse_time, utcnow
from ._storage import CasStorage, FileStorage, Storage, atomic_write

__all__ = [
    "NAME_RULE",
    "AuthCache",
    "CacheConflictError",
    "CacheCorruptError",
    "CacheError",
    "CacheLockTimeout",
    "CacheUnavailableError",
    "CasStorage",
    "Cookie",
    "FileStorage",
    "KeySource",
    "RecordError",
    "SessionRecord",
    "Storage",
    "WrongKeyError",
    "atomic_write",
    "default_cache_location",
    "default_cache_path",
    "default_key_file",
    "format_time",
    "generate_key",
    "normalize_name",
    "open_storage",
    "parse_time",
    "utcnow",
]
