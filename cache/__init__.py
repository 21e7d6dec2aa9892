"""The encrypted, shared session cache.

>>> from cache import AuthCache, SessionRecord, Cookie
>>> c = AuthCache.open()
>>> c.put(SessionRecord(provider="cerebras", cookies=[Cookie("cf_clearance", "…", ".example.com")]))
>>> c.get("cerebras")

It knows nothing of browsers or HTTP, and imports neither: other tools read it on every request.
"""

from __future__ import annotations

from ._cache import AuthCache
from ._exceptions import CacheCorruptError, CacheError, CacheLockTimeout, WrongKeyError
from ._keys import default_cache_path, default_key_file, generate_key
from ._record import Cookie, SessionRecord, format_time, parse_time, utcnow
from ._storage import atomic_write

__all__ = [
    "AuthCache",
    "CacheCorruptError",
    "CacheError",
    "CacheLockTimeout",
    "Cookie",
    "SessionRecord",
    "WrongKeyError",
    "atomic_write",
    "default_cache_path",
    "default_key_file",
    "format_time",
    "generate_key",
    "parse_time",
    "utcnow",
]
