"""``AuthCache``: the encrypted, shared session cache that the harvester writes and every client reads."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, cast

import orjson

from ._exceptions import CacheConflictError, CacheCorruptError, CacheError, WrongKeyError
from ._format import KdfParams, decode_key, pack_records, read_header, seal, unpack_records, unseal
from ._keys import KeySource, default_cache_location, default_key_file, generate_key, write_key_file
from ._record import SessionRecord, check_name
from ._storage import CasStorage, FileStorage, Storage, Version, os_errors

DEFAULT_LOCK_TIMEOUT = 10.0
_CONFLICT_RETRIES = 5

Updater = Callable[[SessionRecord | None], SessionRecord | None]


class _View:
    """One read of the blob: its version token, KDF parameters and the records' JSON, parsed one name at a time.

    Decrypting happens once per version; a record's JSON is only parsed, and its ``SessionRecord`` built, for a
    name asked for (then memoised), so a cold ``get`` of one provider does not parse every other record. A view is never changed
    but for ``built``, a memo that threads may fill at once: each stores an equal record, and a dict item
    assignment is atomic.
    """

    __slots__ = ("built", "kdf", "raw", "token")

    def __init__(
        self,
        token: Version | None,
        raw: Mapping[str, Any],
        kdf: KdfParams | None,
        built: dict[str, SessionRecord] | None = None,
    ) -> None:
        self.token = token
        # name -> the record's JSON: its bytes (a document with an index), or parsed (a document written without)
        self.raw = raw
        self.kdf = kdf
        self.built: dict[str, SessionRecord] = built if built is not None else {}


_UNREAD = _View(None, {}, None)  # nothing read yet: the first read loads the blob and its version together
_EMPTY = _View(None, {}, None)  # read, and nothing was stored


def is_url(location: str) -> bool:
    """True for a storage URL (``redis://``, ``rediss://``, ``unix://``) rather than a file path."""
    return location.startswith(("redis://", "rediss://", "unix://"))


def open_storage(location: str | os.PathLike[str] | None = None) -> Storage:
    """The storage for a path or URL (default ``$HARVEST_CACHE``, else the platform user data dir)."""
    text = os.fspath(location) if location is not None else default_cache_location()
    if is_url(text):
        from ._redis import RedisStorage  # only Redis users import redis-py

        return RedisStorage.from_url(text)
    if text.startswith("file://"):
        text = text[len("file://") :]
    return FileStorage(Path(text).expanduser())


_CAS_TYPES: dict[type, bool] = {}


def _as_cas(storage: Storage) -> CasStorage | None:
    """``storage`` as a ``CasStorage``, or None for a storage without those verbs.

    Asked once per storage type: ``isinstance`` on a runtime protocol looks up every member each time (about 45 us
    here, a tenth of a cold ``get`` on Redis).
    """
    kind = type(storage)
    cas = _CAS_TYPES.get(kind)
    if cas is None:
        cas = _CAS_TYPES[kind] = isinstance(storage, CasStorage)
    return cast(CasStorage, storage) if cas else None


class AuthCache:
    """The encrypted session cache shared by the daemon, the CLI and other tools.

    Reads take no lock: writers replace the blob atomically, so a reader sees a whole old or a whole new one.
    A read only decrypts again when the storage's version token changed, so repeated ``get`` calls cost
    microseconds. Every write is a read-modify-write under the storage's exclusive lock, and the storage refuses a
    write whose base version is no longer current (then it is retried), so no update is ever lost.
    """

    def __init__(
        self,
        storage: Storage,
        key_source: KeySource | str | bytes | None = None,
        *,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> None:
        """Args:
        storage: where the encrypted blob lives (``FileStorage``, ``RedisStorage`` or your own ``Storage``).
        key_source: a ``KeySource``, a raw 32-byte key or its URL-safe base64 form; default: the environment.
        lock_timeout: seconds to wait for another writer before raising ``CacheLockTimeout``.
        """
        self._storage = storage
        self._cas = _as_cas(storage)
        self._keys = key_source if isinstance(key_source, KeySource) else KeySource.resolve(key_source)
        self.lock_timeout = lock_timeout
        # What we last read or wrote: (the storage's version token, its records, its KDF parameters). One
        # attribute, replaced whole, so threads sharing this object never see a token paired with another read.
        self._view: _View = _UNREAD

    @classmethod
    def open(
        cls,
        path_or_url: str | os.PathLike[str] | None = None,
        *,
        key: str | bytes | None = None,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
        path: str | os.PathLike[str] | None = None,
    ) -> AuthCache:
        """Open the cache (nothing is read until the first call).

        Args:
            path_or_url: a cache file path, or ``redis://[:password@]host:port/db`` (also ``rediss://``,
                ``unix:///path.sock``, each with an optional ``?prefix=NAME``); default ``$HARVEST_CACHE``, else
                the platform user data dir. ``path=`` is the older spelling and still works.
            key: a raw 32-byte key or its URL-safe base64 form; default ``$HARVEST_CACHE_KEY``, else
                ``$HARVEST_CACHE_PASSPHRASE``, else the key file (created on first write).
            lock_timeout: seconds to wait for another writer before raising ``CacheLockTimeout``.
        """
        if path_or_url is not None and path is not None:
            raise TypeError("AuthCache.open() takes path_or_url or path=, not both")
        keys = KeySource.resolve(key)
        return cls(open_storage(path_or_url if path_or_url is not None else path), keys, lock_timeout=lock_timeout)

    @property
    def storage(self) -> Storage:
        """The storage under this cache."""
        return self._storage

    @property
    def location(self) -> str:
        """Where the cache lives: a file path, or a URL without its password."""
        return self._storage.location

    @property
    def path(self) -> Path:
        """The cache file (for a server-backed cache: a local directory for this host's state files)."""
        return Path(getattr(self._storage, "path", self._storage.location))

    @property
    def key_origin(self) -> str:
        """Where the key comes from (an env var name or the key file path); never the key itself."""
        return self._keys.origin

    def close(self) -> None:
        """Release the storage's connections and threads (a no-op for a file)."""
        self._storage.close()

    def __repr__(self) -> str:
        return f"AuthCache(location={self.location!r}, key={self.key_origin!r})"

    # -- reads -------------------------------------------------------------------------------------------

    def get(self, provider: str, *, fresh: bool = False) -> SessionRecord | None:
        """Return the provider's record (expired ones included: check ``is_expired``), or None.

        Only this record is parsed: a malformed record raises ``CacheCorruptError`` when it is read (by ``get`` of
        its name, ``list`` or any write), and ``get`` of another name still answers.

        ``fresh``: read the storage now instead of trusting the local view. On Redis the view follows other
        nodes' writes through pub/sub, a few milliseconds late; a caller that has just taken a lock another node
        released (single flight) must see that node's write.
        """
        view = self._load() if fresh else self._current()
        record = view.built.get(provider)
        if record is None:
            raw = view.raw.get(provider)
            if raw is None:
                return None
            record = view.built[provider] = self._parse(raw)
        return record

    def list(self) -> list[SessionRecord]:
        """Return every record, sorted by provider."""
        records = self._records(self._current())
        return [records[name] for name in sorted(records)]

    def _current(self) -> _View:
        view = self._view
        if view is _UNREAD:
            # Cold: one read gives the blob and its version (on Redis one round trip, not a version check first).
            return self._load()
        token = self._storage.version()
        if token is None:
            return _EMPTY
        if token == view.token:
            return view
        return self._load(known=True)

    def _records(self, view: _View) -> dict[str, SessionRecord]:
        """Every record of ``view``, built (and memoised) where not yet; ``CacheCorruptError`` if one is malformed."""
        built = view.built
        if len(built) != len(view.raw):
            for name, raw in view.raw.items():
                if name not in built:
                    built[name] = self._parse(raw)
        return dict(built)

    def _parse(self, raw: Any) -> SessionRecord:
        try:
            if isinstance(raw, bytes | memoryview):
                raw = orjson.loads(raw)  # its JSON bytes, from a document with an index
            # Records were validated when written; a legacy record that fails today's rules is refused at export.
            return SessionRecord.from_json(raw, validate=False)
        except ValueError as exc:  # orjson.JSONDecodeError is one
            raise CacheCorruptError(
                f"{self.location}: a record is malformed ({exc}); run `harvest cache reset` to start empty.",
                path=self._file_path,
                location=self.location,
            ) from None

    def _load(self, *, known: bool = False) -> _View:
        """Read the blob; ``known``: the one at the version the storage just answered, from a local copy where it
        keeps one (Redis pushes written blobs to its subscribers), else from the storage."""
        cas = self._cas
        data, token = cas.load_known() if known and cas is not None else self._storage.load()
        if data is None:
            self._view = _EMPTY
            return _EMPTY
        try:
            header = read_header(data)
            records = unpack_records(unseal(data, header, self._keys.key_for(header.kdf)))
        except CacheCorruptError as exc:
            raise CacheCorruptError(
                f"{self.location}: {exc}. It was left untouched; run `harvest cache reset` to move it aside "
                "and start empty.",
                path=self._file_path,
                location=self.location,
            ) from None
        except WrongKeyError as exc:
            raise WrongKeyError(
                f"{self.location}: {exc}. It was left untouched; set the key it was written with "
                f"(key source: {self.key_origin}), or run `harvest cache reset` to start empty.",
                path=self._file_path,
                location=self.location,
            ) from None
        self._view = view = _View(token, records, header.kdf)
        return view

    # -- writes ------------------------------------------------------------------------------------------

    def put(self, record: SessionRecord) -> None:
        """Store a record under its provider name, replacing any older one (``ValueError`` if it is invalid)."""
        record.validate()
        self._write(lambda records: records.__setitem__(record.provider, record))

    def delete(self, provider: str) -> bool:
        """Remove a provider's record; return whether there was one."""
        check_name(provider)
        found: list[bool] = []
        self._write(lambda records: found.append(records.pop(provider, None) is not None))
        return found[-1]  # the attempt that was saved (a conflict redoes mutate)

    def update(self, provider: str, fn: Updater) -> SessionRecord | None:
        """Read-modify-write one record under the lock; ``fn`` returns the new record, or None to delete it."""
        check_name(provider)
        result: list[SessionRecord | None] = []

        def mutate(records: dict[str, SessionRecord]) -> None:
            new = fn(records.get(provider))
            if new is None:
                records.pop(provider, None)
            else:
                if new.provider != provider:
                    raise ValueError(f"update({provider!r}) returned a record for {new.provider!r}")
                new.validate()
                records[provider] = new
            result.append(new)

        self._write(mutate)
        return result[-1]  # the attempt that was saved (a conflict redoes mutate)

    @property
    def _file_path(self) -> Path | None:
        return getattr(self._storage, "path", None)

    def _write(self, mutate: Callable[[dict[str, SessionRecord]], Any]) -> None:
        if self._cas is not None:
            # The server itself does the compare-and-set (Redis): a write needs no lock, which saves the lock's
            # round trips and, above all, never makes another writer wait for a holder that is slow to be
            # scheduled (a daemon busy with its browser held it for hundreds of ms). A view the storage says is
            # current is built on as it is; else it is read first (a blob we cannot read raises here, before
            # anything is written). Only a conflict takes the lock below, so writers racing for one version
            # cannot starve one another.
            view = self._view
            if view is _UNREAD or self._storage.version() != view.token:
                view = self._load()
            with contextlib.suppress(CacheConflictError):
                self._commit(view, mutate, unlocked=True)
                return
        with self._storage.lock(self.lock_timeout):
            for attempt in range(_CONFLICT_RETRIES):
                # Another process may have written since our last read. If the storage says our view is still
                # current, build on it: save() is a compare-and-set on that version, so a write we did not hear
                # of yet is refused and we re-read below. Otherwise re-read under the lock; a blob we cannot
                # read raises here, before anything is written, so it is never overwritten.
                view = self._view
                if attempt or view is _UNREAD or self._storage.version() != view.token:
                    view = self._load()
                try:
                    self._commit(view, mutate)
                    return
                except CacheConflictError:
                    # Our view was older than the storage said, or the lock was lost (a Redis lock past its
                    # TTL): read again and redo.
                    if attempt == _CONFLICT_RETRIES - 1:
                        raise

    def _commit(
        self, view: _View, mutate: Callable[[dict[str, SessionRecord]], Any], *, unlocked: bool = False
    ) -> None:
        """Apply ``mutate`` to the records of ``view`` and save them, if the storage is still at its version."""
        records = self._records(view)
        mutate(records)
        kdf = view.kdf or self._keys.new_kdf()
        self._save(records, self._keys.key_for(kdf, create=True), kdf, view.token, unlocked=unlocked, read=view)

    def _save(
        self,
        records: dict[str, SessionRecord],
        key: bytes,
        kdf: KdfParams,
        base: Version | None,
        *,
        unlocked: bool = False,
        read: _View | None = None,
    ) -> None:
        """Encrypt and store ``records``; ``read``: the view they came from, whose records that were not replaced
        are stored as the JSON bytes they were read as (only a new or changed record is serialised)."""
        bodies: dict[str, bytes] = {}
        for name, record in sorted(records.items()):
            body = read.raw.get(name) if read is not None and read.built.get(name) is record else None
            bodies[name] = bytes(body) if isinstance(body, bytes | memoryview) else orjson.dumps(record.to_json())
        data = seal(pack_records(bodies), key, kdf)
        if unlocked:
            assert self._cas is not None  # only a CasStorage is written unlocked
            token = self._cas.save(data, base, unlocked=True)
        else:
            token = self._storage.save(data, base)
        self._view = _View(token, bodies, kdf, dict(records))

    # -- maintenance ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def harvest_lock(self, provider: str, timeout: float = 120.0) -> Iterator[None]:
        """Hold the per-provider inter-process lock, so two harvests of one provider make one browser run.

        A sync context manager (single flight holds it from a thread); on Redis it is a Redis lock shared by
        every node.
        """
        with self._storage.named_lock(provider, timeout):
            yield

    def reset(self) -> Path | str | None:
        """Move the cache aside as ``<name>.bad-<UTC timestamp>`` and start empty; return the new name."""
        with self._storage.lock(self.lock_timeout):
            moved = self._storage.move_aside()
            self._view = _EMPTY
        if moved is None:
            return None
        return Path(moved) if isinstance(self._storage, FileStorage) else moved

    def rotate_key(self, new_passphrase: str | None = None) -> str:
        """Re-encrypt the whole cache under a new key, atomically; return where the new key went.

        A raw key is new and random, written to the key file (``$HARVEST_CACHE_KEY_FILE`` or the platform
        config path). With a passphrase, pass ``new_passphrase``; the new salt goes in the file header.
        """
        with self._storage.lock(self.lock_timeout):
            view = self._load()
            base, records = view.token, self._records(view)
            if self._keys.uses_passphrase:
                if not new_passphrase:
                    raise CacheError("this cache uses a passphrase: give the new one to rotate to")
                new_keys = KeySource(passphrase=new_passphrase, origin="$HARVEST_CACHE_PASSPHRASE")
                kdf = new_keys.new_kdf()
                self._save(records, new_keys.key_for(kdf), kdf, base, read=view)
                self._keys = new_keys
                return "the new passphrase (update HARVEST_CACHE_PASSPHRASE)"
            key_file = self._keys.key_file or default_key_file()
            text = generate_key()
            # Order matters for a crash: the new key is on disk (beside the old one) before any record is
            # encrypted under it, and the old key file is only replaced once the cache is.
            pending = key_file.with_name(key_file.name + ".new")
            with os_errors("write the key file", pending):
                write_key_file(pending, text)
            new_keys = KeySource(raw=decode_key(text), key_file=key_file, origin=str(key_file))
            self._save(records, new_keys.key_for(KdfParams()), KdfParams(), base, read=view)
            with os_errors("replace the key file", key_file):
                os.replace(pending, key_file)
            self._keys = new_keys
            if os.environ.get("HARVEST_CACHE_KEY"):
                return f"{key_file} (update HARVEST_CACHE_KEY from it: the old value no longer opens the cache)"
            return str(key_file)
