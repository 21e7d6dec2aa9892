"""Named sessions: FlareSolverr's ``sessions.*`` commands and the ``/v1/sessions`` routes.

A FlareSolverr session is a record in the cache named after it, so it survives restarts and other processes
(and the daemon) see it. What the record cannot say until its first harvest (the proxy the session is bound to,
its TTL) is kept in memory, and in the record's ``extras`` from the first harvest on.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import timedelta

from cache import AuthCache, SessionRecord, utcnow

#: What marks a record as a FlareSolverr session in its ``extras`` (so ``sessions.list`` finds it after a restart).
SESSION_EXTRA = "serve_session"
TTL_EXTRA = "serve_session_ttl_minutes"
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


class SessionNameError(ValueError):
    """Not a usable record name."""


def record_name(value: str) -> str:
    """A session id or host as a record name (lower case); raises ``SessionNameError`` if it cannot be one."""
    name = value.strip().lower()
    if not _NAME.fullmatch(name):
        raise SessionNameError(
            f"{value!r} cannot name a session: use 1-64 characters of a-z, 0-9, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(slots=True)
class Session:
    """One FlareSolverr session: its record's name, the proxy it is bound to and its TTL."""

    name: str
    proxy: str | None = field(default=None, repr=False)  # may carry a password
    ttl: timedelta | None = None
    created: float = field(default_factory=time.monotonic)


class SessionTable:
    """The sessions this server knows: created here, or found in the cache (records marked as sessions)."""

    def __init__(self, cache: AuthCache) -> None:
        self._cache = cache
        self._sessions: dict[str, Session] = {}

    def create(self, name: str, *, proxy: str | None, ttl_minutes: int | None) -> tuple[Session, bool]:
        """Create ``name`` bound to ``proxy``; return it and whether it is new (an existing one is kept as is)."""
        existing = self.get(name)
        if existing is not None:
            return existing, False
        ttl = timedelta(minutes=ttl_minutes) if ttl_minutes and ttl_minutes > 0 else None
        session = self._sessions[name] = Session(name, proxy=proxy, ttl=ttl)
        return session, True

    def get(self, name: str) -> Session | None:
        """The session ``name``, from memory or from its record in the cache."""
        session = self._sessions.get(name)
        if session is not None:
            return session
        record = self._cache.get(name)
        if record is None or not record.extras.get(SESSION_EXTRA):
            return None
        ttl = record.extras.get(TTL_EXTRA)
        session = Session(name, proxy=record.proxy, ttl=timedelta(minutes=ttl) if isinstance(ttl, int) else None)
        self._sessions[name] = session
        return session

    def names(self) -> list[str]:
        """Every session: created here, or a session record in the cache."""
        names = set(self._sessions)
        names.update(r.provider for r in self._cache.list() if r.extras.get(SESSION_EXTRA))
        return sorted(names)

    def destroy(self, name: str) -> bool:
        """Forget ``name`` and delete its record; return whether it existed."""
        session = self.get(name)
        if session is None:
            return False
        self._sessions.pop(name, None)
        self._cache.update(name, lambda r: None if r is not None and r.extras.get(SESSION_EXTRA) else r)
        return True

    def mark(self, session: Session) -> SessionRecord | None:
        """Tag the session's freshly harvested record as a session (with its TTL), so it outlives a restart."""

        def tag(record: SessionRecord | None) -> SessionRecord | None:
            if record is None or record.extras.get(SESSION_EXTRA):
                return record
            extras = {**record.extras, SESSION_EXTRA: True}
            if session.ttl is not None:
                extras[TTL_EXTRA] = int(session.ttl.total_seconds() // 60)
            return record.replace(extras=extras)

        return self._cache.update(session.name, tag)


def usable(record: SessionRecord | None, *, proxy: str | None, ttl: timedelta | None = None) -> bool:
    """Whether ``record`` can answer now: not expired, harvested through ``proxy``, younger than ``ttl``."""
    if record is None or record.is_expired or (record.proxy or None) != (proxy or None):
        return False
    return ttl is None or utcnow() - record.harvested_at < ttl
