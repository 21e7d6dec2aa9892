"""``RedisStorage``: the cache's blob on a Redis server shared by many hosts (selected by a ``redis://`` URL).

Redis only ever holds ciphertext: ``AuthCache`` encrypts before ``save`` and decrypts after ``load``, with the same
AEAD, key sources and key id as the file. Keys, under ``?prefix=`` (default ``harvest``)::

    {prefix}:blob         the encrypted document (the file's bytes)
    {prefix}:ver          a counter, INCRed by every write: the version token
    {prefix}:changed      pub/sub channel: "<ver>:<1 if a blob exists else 0>" after every write
    {prefix}:lock         the writer lock;   {prefix}:lock:<name>  a single-flight harvest lock
    {prefix}:daemon:<id>  daemon heartbeats (with a TTL)

Reads are local: a subscriber thread keeps the latest version number, so ``version()`` costs no round trip and a
warm ``AuthCache.get`` stays in microseconds. If the server goes away, the last known version is kept, so readers
go on answering from their decrypted view (logged once as stale) while the subscriber reconnects; only a reader
that never had a view gets ``CacheUnavailableError``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
import redis.exceptions as rex

from ._exceptions import CacheConflictError, CacheError, CacheLockTimeout, CacheUnavailableError

log = logging.getLogger("harvest.cache")

DEFAULT_PREFIX = "harvest"
LOCK_TTL = 30.0  # seconds a lock survives its holder's death; extended every LOCK_TTL / 3 while held
CONNECT_TIMEOUT = 2.0
SOCKET_TIMEOUT = 5.0
PUSH_LIMIT = 256 * 1024  # a written blob up to this size goes to every subscriber with the change message

# Compare-and-set: write only if the blob is still at the version the caller read. KEYS: blob, ver, writer lock.
# ARGV: data, expected version ("" = no blob), channel, "1" to refuse while the lock is held (a writer without
# the lock), the push channel ("" for a blob too large to push). Returns the new version, or -1 on a conflict.
_SAVE = """
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local present = redis.call('EXISTS', KEYS[1])
local current = redis.call('GET', KEYS[2]) or '0'
if ARGV[2] == '' then
  if present == 1 then return -1 end
elseif present == 0 or current ~= ARGV[2] then
  return -1
end
redis.call('SET', KEYS[1], ARGV[1])
local v = redis.call('INCR', KEYS[2])
if ARGV[5] ~= '' then redis.call('PUBLISH', ARGV[5], v .. ':' .. ARGV[1]) end
redis.call('PUBLISH', ARGV[3], v .. ':1')
return v
"""
# Rename the blob aside. KEYS: blob, ver, aside. ARGV: channel. Returns 1, or 0 when there was no blob.
_MOVE_ASIDE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[3])
local v = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[1], v .. ':0')
return 1
"""


# A new connection should cost one round trip (AUTH; none without a password): a one-shot `harvest cache get` makes
# one connection and one MGET. redis-py >= 5 adds CLIENT SETINFO lib-name and lib-ver (two round trips; errors on a
# Redis before 7.2): turned off by driver_info=None where it exists (lib_name/lib_version are deprecated there), else
# by lib_name=None, lib_version=None. redis-py 8 speaks RESP3 by default, and after its HELLO sends CLIENT
# MAINT_NOTIFICATIONS (another round trip): RESP2 needs neither, and nothing here uses RESP3's types.
_CONNECTION_OPTIONS: dict[str, Any] = {"protocol": 2}
try:
    import redis.driver_info

    _CONNECTION_OPTIONS["driver_info"] = None
except ImportError:
    _CONNECTION_OPTIONS |= {"lib_name": None, "lib_version": None}


def redact(url: str) -> str:
    """The URL without its password (and without a user name paired with it)."""
    parts = urlsplit(url)
    if parts.password is None and "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    netloc = f"{user}:***@{host}" if user else f":***@{host}" if parts.password else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def split_url(url: str) -> tuple[str, str, float]:
    """Split our ``?prefix=NAME&lock_ttl=SECONDS`` off a Redis URL: ``(url for redis-py, prefix, lock TTL)``."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = DEFAULT_PREFIX
    ttl_text = str(LOCK_TTL)
    kept = []
    for name, value in query:
        if name == "prefix":
            prefix = value
        elif name == "lock_ttl":
            ttl_text = value
        else:
            kept.append((name, value))
    if not prefix or any(ch.isspace() or ch == ":" for ch in prefix):
        raise CacheError(f"bad ?prefix= in the cache URL {redact(url)}: it must be a non-empty word")
    try:
        ttl = float(ttl_text)
    except ValueError:
        ttl = -1.0
    if not 0.5 <= ttl <= 3600:
        raise CacheError(f"bad ?lock_ttl= in the cache URL {redact(url)}: seconds from 0.5 to 3600")
    query_text = urlencode(kept)
    # Built by hand: urlunsplit drops the empty authority of unix:///path.sock.
    plain = f"{parts.scheme}://{parts.netloc}{parts.path}" + (f"?{query_text}" if query_text else "")
    return plain, prefix, ttl


class _Reader:
    """One connection held out of the client's pool for the blob reads (``MGET blob ver``), one at a time.

    A cold ``get`` is one MGET; through ``client.mget`` it cost about 150 us of redis-py's own work per call (its
    retry wrapper, pool check-out with a readiness poll, check-in and observability counters) beside a round trip
    of about 25 us. The connection is redis-py's (its handshake, TLS, unix sockets and RESP parser); only the
    command dispatch is skipped. A thread that finds it busy uses the pool (``None``: the caller does).
    """

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._lock = threading.Lock()  # guards _conn: one command and its reply at a time on it
        self._conn: Any = None
        self._pid = os.getpid()  # a forked child never reuses its parent's socket

    def mget(self, command: tuple[str, ...]) -> list[Any] | None:
        """The reply to ``command`` (an MGET), or None when another thread is using the connection."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._pid != os.getpid():
                self._conn, self._pid = None, os.getpid()
            for attempt in (0, 1):
                conn = self._conn
                if conn is None:
                    conn = self._conn = self._pool.get_connection()  # connected, handshake done
                try:
                    conn.send_command(*command, check_health=False)
                    return cast("list[Any]", conn.read_response())
                except rex.ConnectionError:
                    # The server closed a connection we held (restarted, idle timeout): a fresh one, once,
                    # as redis-py's own retry would (MGET is idempotent).
                    self._drop(conn)
                    if attempt:
                        raise
                except BaseException:
                    self._drop(conn)  # a reply may be half read: never reuse it
                    raise
            raise AssertionError("unreachable")
        finally:
            self._lock.release()

    def _drop(self, conn: Any) -> None:
        self._conn = None
        with contextlib.suppress(Exception):
            conn.disconnect()
        with contextlib.suppress(Exception):
            self._pool.release(conn)

    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                self._pool.release(conn)


class _Shared:
    """A process-wide redis-py client, what its URL says, its scripts, and how many open handles use it."""

    def __init__(self, client: redis.Redis, prefix: str, lock_ttl: float, location: str) -> None:
        self.client = client
        self.prefix = prefix
        self.lock_ttl = lock_ttl
        self.location = location
        # Registered once per client (each registration hashes the script): a handle opens in microseconds.
        self.save_script = client.register_script(_SAVE)
        self.move_script = client.register_script(_MOVE_ASIDE)
        self.reader = _Reader(client)
        self.handles = 0


_CLIENTS: dict[str, _Shared] = {}
_CLIENTS_LOCK = threading.Lock()


class RedisStorage:
    """The cache blob on Redis, with a local version kept fresh by pub/sub, and Redis locks.

    A ``CasStorage``: ``save`` is a compare-and-set done by the server in one script, so ``AuthCache`` writes on a
    current view without the writer lock (two round trips fewer), and ``load_known`` installs a blob that a write
    pushed to the subscriber without a round trip.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        location: str = "redis",
        lock_ttl: float = LOCK_TTL,
        scripts: tuple[Any, Any] | None = None,
        reader: _Reader | None = None,
    ) -> None:
        self._client = client
        self._reader = reader or _Reader(client)
        self.prefix = prefix
        #: seconds a lock outlives a holder that died (extended every third of it while the holder lives)
        self.lock_ttl = lock_ttl
        self._location = location
        self._blob = f"{prefix}:blob"
        self._ver = f"{prefix}:ver"
        self._mget = ("MGET", self._blob, self._ver)
        self._channel = f"{prefix}:changed"
        # "<ver>:<blob>" after every write of a blob up to PUSH_LIMIT bytes, published before the change message:
        # a reader installs the new blob without a round trip.
        self._push_channel = f"{prefix}:pushed"
        self._pushed: tuple[int, bytes] | None = None
        if scripts is None:
            scripts = (client.register_script(_SAVE), client.register_script(_MOVE_ASIDE))
        self._save_script: Any = scripts[0]
        self._move_script: Any = scripts[1]
        # The latest (version, blob present) we know of, written by the subscriber thread and by our own writes.
        # Versions only grow, so a late message never rolls it back; a tuple is replaced whole (no lock needed).
        self._known: tuple[int, bool] | None = None
        self._subscribed = threading.Event()  # set while the subscriber is connected: _known is then current
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None
        self._stale_logged = False
        self._down_until = 0.0  # after a failed round trip, serve the known view without retrying until then
        self._start_lock = threading.Lock()  # guards starting the subscriber and keeper threads once each
        self._keeper: threading.Thread | None = None
        # The locks this process holds now, by id: the keeper extends them. Items are set and popped whole
        # (atomic under the GIL); the keeper iterates over a copy.
        self._held: dict[int, Any] = {}
        self._shared_key: str | None = None  # set by from_url: the key of the process-wide client it uses

    @classmethod
    def from_url(cls, url: str) -> RedisStorage:
        """Open ``redis://[:password@]host:port/db``, ``rediss://…`` or ``unix:///path.sock`` (``?prefix=NAME``)."""
        with _CLIENTS_LOCK:
            # One client (one connection pool) per cache URL in a process, however many handles open it: a new
            # handle's first read then costs a round trip, not a client, a TCP connection and an AUTH.
            shared = _CLIENTS.get(url)
            if shared is None:
                plain, prefix, ttl = split_url(url)
                try:
                    client = redis.Redis.from_url(
                        plain,
                        socket_connect_timeout=CONNECT_TIMEOUT,
                        socket_timeout=SOCKET_TIMEOUT,
                        retry_on_timeout=False,
                        **_CONNECTION_OPTIONS,
                    )
                except ValueError as exc:
                    raise CacheError(f"bad cache URL {redact(url)}: {exc}") from None
                shared = _CLIENTS[url] = _Shared(client, prefix, ttl, redact(url))
            shared.handles += 1
        storage = cls(
            shared.client,
            prefix=shared.prefix,
            location=shared.location,
            lock_ttl=shared.lock_ttl,
            scripts=(shared.save_script, shared.move_script),
            reader=shared.reader,
        )
        storage._shared_key = url
        return storage

    @property
    def location(self) -> str:
        return self._location

    @property
    def path(self) -> Path:
        """A local path for this host's state files (the daemon's status file): beside the key file."""
        from ._keys import default_key_file

        safe = "".join(ch if ch.isalnum() else "_" for ch in self._location.split("@")[-1].split("?")[0])
        return default_key_file().parent / f"redis-{safe}-{self.prefix}.cache"

    @property
    def client(self) -> redis.Redis:
        """The redis-py client (the daemon's heartbeat uses it)."""
        return self._client

    # -- errors ----------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Map redis-py's errors to the cache's, naming the server and never its password."""
        try:
            yield
        except rex.AuthenticationError:
            raise CacheUnavailableError(
                f"the cache server {self._location} refused our credentials (wrong password in the URL?)",
                location=self._location,
            ) from None
        except rex.ResponseError as exc:
            text = str(exc)
            if text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")):
                raise CacheUnavailableError(
                    f"the cache server {self._location} refused our credentials ({text.split()[0]})",
                    location=self._location,
                ) from None
            raise CacheError(f"the cache server {self._location} answered an error: {text}") from None
        except rex.TimeoutError:
            raise CacheUnavailableError(
                f"the cache server {self._location} did not answer within {SOCKET_TIMEOUT:g} s",
                location=self._location,
            ) from None
        except (rex.ConnectionError, OSError) as exc:
            reason = _reason(exc)
            raise CacheUnavailableError(
                f"cannot reach the cache server {self._location}: {reason}", location=self._location
            ) from None

    # -- reads -------------------------------------------------------------------------------------------------

    def version(self) -> int | None:
        self._ensure_watcher()
        # Ask "subscribed?" before reading the version: the subscriber stores the version it read and only then
        # sets the event, so a set event vouches for the version read after it (not for one read before).
        subscribed = self._subscribed.is_set()
        known = self._known
        if known is not None and (subscribed or time.monotonic() < self._down_until):
            return known[0] if known[1] else None  # no round trip: the subscriber keeps it current
        try:
            with self._errors():
                pipe = self._client.pipeline(transaction=True)
                pipe.get(self._ver)
                pipe.exists(self._blob)
                ver, present = pipe.execute()
        except CacheUnavailableError:
            if known is None:
                raise
            self._down_until = time.monotonic() + 1.0
            if not self._stale_logged:
                self._stale_logged = True
                log.warning("cache.stale location=%s: serving the last good view until Redis is back", self._location)
            return known[0] if known[1] else None
        self._remember(int(ver or 0), bool(present))
        self._stale_logged = False
        return int(ver or 0) if present else None

    def load(self) -> tuple[bytes | None, int | None]:
        # No subscriber yet: a one-shot read (`harvest cache get`) needs none, and its thread and connection would
        # cost more than the read. The first version() starts it; until it is subscribed, version() asks the
        # server, so no write after this load is missed.
        with self._errors():
            # One command, so the pair is read atomically (redis-py types replies loosely: these are bytes).
            reply = self._reader.mget(self._mget)
            if reply is None:  # another thread is reading: through the pool
                reply = self._client.mget([self._blob, self._ver])
            data, ver = cast("list[bytes | None]", reply)
        self._remember(int(ver or 0), data is not None)
        if data is None:
            return None, None
        return bytes(data), int(ver or 0)

    def load_known(self) -> tuple[bytes | None, int | None]:
        """The blob at the version ``version()`` last answered: the copy a write pushed to us when it is that
        version (no round trip), else ``load()``."""
        known, pushed = self._known, self._pushed
        if known is not None and known[1] and pushed is not None and pushed[0] == known[0]:
            return pushed[1], pushed[0]
        return self.load()

    def _remember(self, ver: int, present: bool) -> None:
        known = self._known
        if known is None or ver >= known[0]:
            self._known = (ver, present)

    # -- writes ------------------------------------------------------------------------------------------------

    def save(self, data: bytes, expected: Any = None, *, unlocked: bool = False) -> int:
        """Compare-and-set (see ``Storage.save``). ``unlocked``: the caller does not hold the writer lock, so the
        save is also refused while another writer holds it (a writer under the lock is never starved)."""
        with self._errors():
            result = self._save_script(
                keys=[self._blob, self._ver, f"{self.prefix}:lock"],
                args=[
                    data,
                    "" if expected is None else str(expected),
                    self._channel,
                    "1" if unlocked else "0",
                    self._push_channel if len(data) <= PUSH_LIMIT else "",
                ],
            )
        if int(result) < 0:
            raise CacheConflictError(f"{self._location} changed while it was being updated", location=self._location)
        self._remember(int(result), True)
        return int(result)

    def move_aside(self) -> str | None:
        from datetime import UTC, datetime

        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        aside = f"{self._blob}.bad-{stamp}"
        with self._errors():
            moved = self._move_script(keys=[self._blob, self._ver, aside], args=[self._channel])
            ver = self._client.get(self._ver)
        self._remember(int(ver or 0), False)
        return aside if int(moved) else None

    # -- locks -------------------------------------------------------------------------------------------------

    def lock(self, timeout: float) -> contextlib.AbstractContextManager[None]:
        return self._hold(
            f"{self.prefix}:lock",
            timeout,
            f"another process held the cache lock on {self._location} for more than {timeout:g} s",
        )

    def named_lock(self, name: str, timeout: float) -> contextlib.AbstractContextManager[None]:
        return self._hold(
            f"{self.prefix}:lock:{name}",
            timeout,
            f"another harvest of {name!r} held its lock for more than {timeout:g} s",
        )

    @contextlib.contextmanager
    def _hold(self, key: str, timeout: float, message: str) -> Iterator[None]:
        """A Redis lock: random token, TTL, extended while held, released only by its owner (redis-py ``Lock``)."""
        lock = self._client.lock(key, timeout=self.lock_ttl, sleep=0.005, blocking_timeout=timeout, thread_local=False)
        with self._errors():
            acquired = lock.acquire()
        if not acquired:
            raise CacheLockTimeout(message, location=self._location)
        self._ensure_keeper()
        self._held[id(lock)] = lock
        try:
            yield
        finally:
            self._held.pop(id(lock), None)
            with contextlib.suppress(rex.LockError, rex.ConnectionError, rex.TimeoutError, OSError):
                lock.release()  # a lock that expired meanwhile is another owner's now: redis-py refuses to free it

    def _ensure_keeper(self) -> None:
        # One keeper thread per storage, started at the first lock, not one per hold: a thread start waits until
        # the new thread runs, which on a busy host delayed every write by milliseconds.
        if self._keeper is not None:
            return
        with self._start_lock:
            if self._keeper is None:
                self._keeper = threading.Thread(target=self._keep, name="harvest-lock-keeper", daemon=True)
                self._keeper.start()

    def _keep(self) -> None:
        """Extend every held lock's TTL every third of it (a dead holder stops extending, so its locks expire).

        A lock taken just before a round is extended early: harmless, and never later than a third of the TTL.
        """
        while not self._closing.wait(self.lock_ttl / 3):
            for lock in list(self._held.values()):
                with contextlib.suppress(rex.LockError, rex.ConnectionError, rex.TimeoutError, OSError):
                    lock.reacquire()  # one released meanwhile is refused by redis-py: not ours any more

    # -- daemon heartbeats --------------------------------------------------------------------------------------

    def put_heartbeat(self, daemon_id: str, document: dict[str, Any], ttl: float) -> None:
        """Publish one daemon's heartbeat; it vanishes ``ttl`` seconds after the last one (a dead node drops out)."""
        import orjson

        with self._errors():
            self._client.set(f"{self.prefix}:daemon:{daemon_id}", orjson.dumps(document), px=int(ttl * 1000))

    def drop_heartbeat(self, daemon_id: str) -> None:
        """Remove a daemon's heartbeat (at a clean stop)."""
        with self._errors():
            self._client.delete(f"{self.prefix}:daemon:{daemon_id}")

    def heartbeats(self) -> list[dict[str, Any]]:
        """Every live daemon's heartbeat document, sorted by node and pid."""
        import orjson

        with self._errors():
            keys = sorted(self._client.scan_iter(f"{self.prefix}:daemon:*", count=100))
            values = self._client.mget(keys) if keys else []
        beats = []
        for value in values:
            if value is None:
                continue
            with contextlib.suppress(orjson.JSONDecodeError):
                document = orjson.loads(value)
                if isinstance(document, dict):
                    beats.append(document)
        return sorted(beats, key=lambda d: (str(d.get("node")), str(d.get("pid"))))

    # -- the subscriber ----------------------------------------------------------------------------------------

    def _ensure_watcher(self) -> None:
        if self._watcher is not None or self._closing.is_set():
            return
        with self._start_lock:
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, name="harvest-cache-watch", daemon=True)
                self._watcher.start()

    def _watch(self) -> None:
        """Follow the change channel; on any error mark the view unconfirmed and reconnect with backoff."""
        delay = 0.05
        while not self._closing.is_set():
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                self._pushed = None  # a copy from before a reconnect may be of another server's version count
                pubsub.subscribe(self._push_channel, self._channel)
                # Read the version only once subscribed: no write can fall between the two.
                pipe = self._client.pipeline(transaction=True)
                pipe.get(self._ver)
                pipe.exists(self._blob)
                ver, present = pipe.execute()
                self._known = (int(ver or 0), bool(present))
                self._subscribed.set()
                if self._stale_logged:
                    log.info("cache.reconnected location=%s", self._location)
                    self._stale_logged = False
                delay = 0.05
                while not self._closing.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if not message or message.get("type") != "message":
                        continue
                    if message["channel"] == self._push_channel.encode():
                        # In order on this connection; a server restarted since restarts its counter, but then
                        # this connection broke and the copy was dropped at the new subscribe.
                        ver_text, _, blob = message["data"].partition(b":")
                        self._pushed = (int(ver_text), blob)
                    else:
                        ver_text, _, flag = message["data"].decode().partition(":")
                        self._remember(int(ver_text), flag == "1")
            except (rex.RedisError, OSError, ValueError):
                if self._subscribed.is_set():
                    log.warning("cache.disconnected location=%s: reconnecting", self._location)
                self._subscribed.clear()
                if self._closing.wait(delay):
                    break
                delay = min(delay * 2, 2.0)
            finally:
                self._subscribed.clear()
                with contextlib.suppress(Exception):
                    pubsub.close()

    def close(self) -> None:
        self._closing.set()
        for thread in (self._watcher, self._keeper):
            if thread is not None:
                thread.join(2)
        key, self._shared_key = self._shared_key, None
        if key is not None:
            with _CLIENTS_LOCK:
                shared = _CLIENTS.get(key)
                if shared is None or shared.client is not self._client:
                    return  # closed already
                shared.handles -= 1
                if shared.handles > 0:
                    return  # other handles of this process still use the client
                del _CLIENTS[key]
        with contextlib.suppress(Exception):
            self._reader.close()
            self._client.close()

    def wait_for_version(self, ver: int, timeout: float) -> bool:
        """Wait until this storage has heard of version ``ver`` (tests and the benchmark use it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            known = self._known
            if known is not None and known[0] >= ver:
                return True
            time.sleep(0.001)
        return False


def _reason(exc: BaseException) -> str:
    text = str(exc)
    if "refused" in text.lower():
        return "connection refused"
    if "name or service" in text.lower() or "nodename" in text.lower():
        return "unknown host"
    if "timed out" in text.lower() or "timeout" in text.lower():
        return "timed out"
    if "No such file" in text:
        return "no such socket"
    return text.split(". ")[0][:120] or type(exc).__name__
