"""Where the cache key comes from: an argument, the environment, or a key file made on first write."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ._exceptions import CacheError, WrongKeyError
from ._format import KEY_SIZE, KdfParams, decode_key, derive_key, encode_key
from ._storage import atomic_write, make_dirs

APP_NAME = "harvest"


def default_cache_location() -> str:
    """The cache: ``$HARVEST_CACHE`` (a path or a ``redis://`` URL), else the platform user data dir."""
    env = os.environ.get("HARVEST_CACHE")
    if env:
        return env
    import platformdirs

    return str(platformdirs.user_data_path(APP_NAME) / "sessions.cache")


def default_cache_path() -> Path:
    """The cache file: ``$HARVEST_CACHE``, else the platform user data dir."""
    env = os.environ.get("HARVEST_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return platformdirs.user_data_path(APP_NAME) / "sessions.cache"


def default_key_file() -> Path:
    """The key file: ``$HARVEST_CACHE_KEY_FILE``, else the platform user config dir."""
    env = os.environ.get("HARVEST_CACHE_KEY_FILE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return platformdirs.user_config_path(APP_NAME) / "cache.key"


def generate_key() -> str:
    """Return a new random key in its printable form (URL-safe base64 of 32 bytes)."""
    return encode_key(os.urandom(KEY_SIZE))


@dataclass
class KeySource:
    """Resolves the key for a file's KDF parameters; derived keys are kept so scrypt runs once per salt."""

    raw: bytes | None = field(default=None, repr=False)
    passphrase: str | None = field(default=None, repr=False)
    key_file: Path | None = None
    origin: str = "argument"
    _derived: dict[bytes, bytes] = field(default_factory=dict, repr=False)

    @classmethod
    def resolve(cls, key: str | bytes | None = None) -> KeySource:
        """Pick the key by precedence: argument, ``$HARVEST_CACHE_KEY``, ``$HARVEST_CACHE_PASSPHRASE``, key file."""
        if isinstance(key, bytes):
            if len(key) != KEY_SIZE:
                raise WrongKeyError(f"the cache key must be {KEY_SIZE} bytes, got {len(key)}")
            return cls(raw=key, origin="argument")
        if isinstance(key, str):
            return cls(raw=decode_key(key), origin="argument")
        env_key = os.environ.get("HARVEST_CACHE_KEY")
        if env_key:
            return cls(raw=decode_key(env_key), origin="$HARVEST_CACHE_KEY")
        passphrase = os.environ.get("HARVEST_CACHE_PASSPHRASE")
        if passphrase:
            return cls(passphrase=passphrase, origin="$HARVEST_CACHE_PASSPHRASE")
        path = default_key_file()
        return cls(key_file=path, origin=str(path))

    @property
    def uses_passphrase(self) -> bool:
        """True when keys are derived from a passphrase (the file header then carries a salt)."""
        return self.passphrase is not None

    def new_kdf(self) -> KdfParams:
        """KDF parameters for a brand-new file."""
        return KdfParams.new_scrypt() if self.uses_passphrase else KdfParams()

    def key_for(self, kdf: KdfParams, *, create: bool = False) -> bytes:
        """Return the key for a file with these KDF parameters, making the key file if ``create``."""
        if kdf.kdf == "scrypt":
            if self.passphrase is None:
                raise WrongKeyError("the cache file is protected by a passphrase; set HARVEST_CACHE_PASSPHRASE")
            derived = self._derived.get(kdf.salt)
            if derived is None:
                derived = self._derived[kdf.salt] = derive_key(self.passphrase, kdf)
            return derived
        if self.raw is None and self.passphrase is None and self.key_file is not None:
            # Read lazily: another process may create the key file after this handle was opened.
            if self.key_file.is_file():
                self.raw = _read_key_file(self.key_file)
            elif create:
                self.raw = _create_key_file(self.key_file)
        if self.raw is None:
            if self.passphrase is not None:
                raise WrongKeyError("the cache file uses a raw key, but only HARVEST_CACHE_PASSPHRASE is set")
            raise WrongKeyError(f"no cache key: set HARVEST_CACHE_KEY, or restore the key file {self.key_file}")
        return self.raw


def _read_key_file(path: Path) -> bytes:
    try:
        return decode_key(path.read_text())
    except OSError as exc:
        raise WrongKeyError(f"cannot read the key file {path}: {exc.strerror}") from None


def _create_key_file(path: Path) -> bytes:
    """Write a new key file with mode 0600; if another process won the race, use its key."""
    text = generate_key()
    try:
        make_dirs(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.is_file():
            return _read_key_file(path)
        raise CacheError(f"cannot create the key file {path}: a parent is not a directory", path=path) from None
    except OSError as exc:
        raise CacheError(
            f"cannot create the key file {path}: {exc.strerror or type(exc).__name__}", path=path
        ) from None
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return decode_key(text)


def write_key_file(path: Path, text: str) -> None:
    """Atomically replace a key file with ``text`` (mode 0600)."""
    make_dirs(path.parent)
    atomic_write(path, (text + "\n").encode())
