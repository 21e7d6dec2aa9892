"""``AuthCache``: the encrypted, shared session cache that the harvester writes and every client reads."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ._exceptions import CacheCorruptError, CacheError, WrongKeyError
from ._format import KdfParams, decode_key, decrypt, encrypt, read_header
from ._keys import KeySource, default_cache_path, default_key_file, generate_key, write_key_file
from ._record import SessionRecord
from ._storage import FileStorage, StatToken

DOCUMENT_VERSION = 1
DEFAULT_LOCK_TIMEOUT = 10.0

Updater = Callable[[SessionRecord | None], SessionRecord | None]
_View = tuple["StatToken | None", dict[str, SessionRecord], "KdfParams | None"]
_EMPTY: _View = (None, {}, None)


class AuthCache:
    """The encrypted session cache shared by the daemon, the CLI and other tools.

    Reads take no lock: writers replace the file atomically, so a reader sees a whole old or a whole new file.
    A read only decrypts again when the file's stat changed, so repeated ``get`` calls cost microseconds.
    Every write is a read-modify-write under an exclusive inter-process lock.
    """

    def __init__(self, storage: FileStorage, keys: KeySource, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self._storage = storage
        self._keys = keys
        self.lock_timeout = lock_timeout
        # What we last read or wrote: (the file's stat token, its records, its KDF parameters). One attribute,
        # replaced whole, so threads sharing this object never see a token paired with another read's records.
        self._view: _View = _EMPTY

    @classmethod
    def open(
        cls, path: str | os.PathLike[str] | None = None, key: str | bytes | None = None, *, lock_timeout: float = 10.0
    ) -> AuthCache:
        """Open the cache (nothing is read until the first call).

        Args:
            path: the cache file; default ``$HARVEST_CACHE``, else the platform user data dir.
            key: a raw 32-byte key or its URL-safe base64 form; default ``$HARVEST_CACHE_KEY``, else
                ``$HARVEST_CACHE_PASSPHRASE``, else the key file (created on first write).
            lock_timeout: seconds to wait for another writer before raising ``CacheLockTimeout``.
        """
        file_path = Path(path).expanduser() if path is not None else default_cache_path()
        return cls(FileStorage(file_path), KeySource.resolve(key), lock_timeout=lock_timeout)

    @property
    def path(self) -> Path:
        """The cache file."""
        return self._storage.path

    @property
    def key_origin(self) -> str:
        """Where the key comes from (an env var name or the key file path); never the key itself."""
        return self._keys.origin

    def __repr__(self) -> str:
        return f"AuthCache(path={str(self.path)!r}, key={self.key_origin!r})"

    # -- reads -------------------------------------------------------------------------------------------

    def get(self, provider: str) -> SessionRecord | None:
        """Return the provider's record (expired ones included: check ``is_expired``), or None."""
        return self._snapshot().get(provider)

    def list(self) -> list[SessionRecord]:
        """Return every record, sorted by provider."""
        records = self._snapshot()
        return [records[name] for name in sorted(records)]

    def _snapshot(self) -> dict[str, SessionRecord]:
        token = self._storage.stat()
        if token is None:
            return {}
        view = self._view
        if token == view[0]:
            return view[1]
        return self._load()[1]

    def _load(self) -> _View:
        data, token = self._storage.load()
        if data is None:
            self._view = _EMPTY
            return _EMPTY
        try:
            header = read_header(data)
            document = decrypt(data, header, self._keys.key_for(header.kdf))
            records = {name: SessionRecord.from_json(raw) for name, raw in document["records"].items()}
        except CacheCorruptError as exc:
            raise CacheCorruptError(
                f"{self.path}: {exc}. It was left untouched; run `harvest cache reset` to move it aside "
                "and start empty.",
                path=self.path,
            ) from None
        except WrongKeyError as exc:
            raise WrongKeyError(
                f"{self.path}: {exc}. It was left untouched; set the key it was written with "
                f"(key source: {self.key_origin}), or run `harvest cache reset` to start empty.",
                path=self.path,
            ) from None
        except ValueError as exc:
            raise CacheCorruptError(
                f"{self.path}: a record is malformed ({exc}); run `harvest cache reset` to start empty.",
                path=self.path,
            ) from None
        self._view = view = (token, records, header.kdf)
        return view

    # -- writes ------------------------------------------------------------------------------------------

    def put(self, record: SessionRecord) -> None:
        """Store a record under its provider name, replacing any older one."""
        self._write(lambda records: records.__setitem__(record.provider, record))

    def delete(self, provider: str) -> bool:
        """Remove a provider's record; return whether there was one."""
        found: list[bool] = []
        self._write(lambda records: found.append(records.pop(provider, None) is not None))
        return found[0]

    def update(self, provider: str, fn: Updater) -> SessionRecord | None:
        """Read-modify-write one record under the lock; ``fn`` returns the new record, or None to delete it."""
        result: list[SessionRecord | None] = []

        def mutate(records: dict[str, SessionRecord]) -> None:
            new = fn(records.get(provider))
            if new is None:
                records.pop(provider, None)
            else:
                if new.provider != provider:
                    raise ValueError(f"update({provider!r}) returned a record for {new.provider!r}")
                records[provider] = new
            result.append(new)

        self._write(mutate)
        return result[0]

    def _write(self, mutate: Callable[[dict[str, SessionRecord]], Any], *, key: bytes | None = None) -> None:
        with self._storage.lock(self.lock_timeout):
            # Re-read under the lock: another process may have written since our last read. A file we
            # cannot read raises here, before anything is written, so it is never overwritten.
            _, current, kdf = self._load() if self._storage.stat() is not None else _EMPTY
            records = dict(current)
            mutate(records)
            kdf = kdf or self._keys.new_kdf()
            write_key = key or self._keys.key_for(kdf, create=True)
            self._save(records, write_key, kdf)

    def _save(self, records: dict[str, SessionRecord], key: bytes, kdf: KdfParams) -> None:
        document = {
            "version": DOCUMENT_VERSION,
            "records": {name: rec.to_json() for name, rec in sorted(records.items())},
        }
        self._storage.save(encrypt(document, key, kdf))
        self._view = (self._storage.stat(), records, kdf)

    # -- maintenance ---------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def harvest_lock(self, provider: str, timeout: float = 120.0) -> Iterator[None]:
        """Hold the per-provider inter-process lock, so two harvests of one provider make one browser run."""
        with self._storage.named_lock(provider, timeout):
            yield

    def reset(self) -> Path | None:
        """Move the cache file aside as ``<name>.bad-<UTC timestamp>`` and start empty; return the new name."""
        with self._storage.lock(self.lock_timeout):
            if self._storage.stat() is None:
                return None
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            target = self.path.with_name(f"{self.path.name}.bad-{stamp}")
            os.replace(self.path, target)
            self._view = _EMPTY
            return target

    def rotate_key(self, new_passphrase: str | None = None) -> str:
        """Re-encrypt the whole cache under a new key, atomically; return where the new key went.

        A raw key is new and random, written to the key file (``$HARVEST_CACHE_KEY_FILE`` or the platform
        config path). With a passphrase, pass ``new_passphrase``; the new salt goes in the file header.
        """
        with self._storage.lock(self.lock_timeout):
            records = dict(self._load()[1]) if self._storage.stat() is not None else {}
            if self._keys.uses_passphrase:
                if not new_passphrase:
                    raise CacheError("this cache uses a passphrase: give the new one to rotate to")
                new_keys = KeySource(passphrase=new_passphrase, origin="$HARVEST_CACHE_PASSPHRASE")
                kdf = new_keys.new_kdf()
                self._save(records, new_keys.key_for(kdf), kdf)
                self._keys = new_keys
                return "the new passphrase (update HARVEST_CACHE_PASSPHRASE)"
            key_file = self._keys.key_file or default_key_file()
            text = generate_key()
            # Order matters for a crash: the new key is on disk (beside the old one) before any record is
            # encrypted under it, and the old key file is only replaced once the cache is.
            pending = key_file.with_name(key_file.name + ".new")
            write_key_file(pending, text)
            new_keys = KeySource(raw=decode_key(text), key_file=key_file, origin=str(key_file))
            self._save(records, new_keys.key_for(KdfParams()), KdfParams())
            os.replace(pending, key_file)
            self._keys = new_keys
            if os.environ.get("HARVEST_CACHE_KEY"):
                return f"{key_file} (update HARVEST_CACHE_KEY from it: the old value no longer opens the cache)"
            return str(key_file)
