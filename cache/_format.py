"""The cache file format, as pure functions: bytes in, bytes out, no I/O.

Layout::

    magic    8 bytes   b"HARVEST\\x00"
    version  1 byte    FORMAT_VERSION
    hlen     2 bytes   big-endian length of the header JSON
    header   hlen      JSON: {"kdf": "none"|"scrypt", "n", "r", "p", "salt", "key_id"}
    hcrc     4 bytes   CRC-32 of the header JSON, so a damaged header reads as corrupt, not as a wrong key
    nonce    12 bytes  AES-GCM nonce, fresh per write
    body     rest      AES-256-GCM ciphertext of one JSON document, with everything before the nonce as
                       associated data: the header is authenticated, not encrypted.

The document is ``{"version": 1, "records": {name: record, ...}}``. This build writes it with two more keys at
the end, an index of where each record's JSON lies in the document and where that index starts::

    {"version":1,"records":{"a":{...},"b":{...}},"index":{"a":[24,1260],"b":[1266,2480]},"index_at":"0000002492"}

so a reader decrypts, finds the index from the fixed-size tail and parses only the record it is asked for
(a cold ``get`` of one of 50 records parses 1 KB, not 60). It is still the same version-1 document: a build
without the index parses the whole of it and ignores the two keys, and writes documents without them, which
this build parses whole (see :func:`unpack_records`). Readers and writers of both kinds can share one cache.
"""

from __future__ import annotations

import base64
import operator
import os
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ._exceptions import CacheCorruptError, WrongKeyError

MAGIC = b"HARVEST\x00"
FORMAT_VERSION = 1
DOCUMENT_VERSION = 1
KEY_SIZE = 32
NONCE_SIZE = 12
_PREFIX = struct.Struct(">8sBH")  # magic, version, header length

# scrypt cost: 2**15 × 8 × 128 bytes = 32 MiB and ~0.1 s per derivation. Stored in the header, so it can
# be raised later without breaking old files.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
# What a header may ask for, checked before any work: a hostile header must not make us spend minutes or
# gigabytes. n*r*128 bytes is scrypt's memory; p multiplies its time.
SCRYPT_MAX_N = 2**20
SCRYPT_MAX_R = 32
SCRYPT_MAX_P = 16
SCRYPT_MAXMEM = 256 * 1024 * 1024
SALT_SIZES = range(8, 65)


@dataclass(frozen=True, slots=True)
class KdfParams:
    """How the file's key is derived: from nothing (a raw key) or from a passphrase with scrypt."""

    kdf: str = "none"
    salt: bytes = b""
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    @classmethod
    def new_scrypt(cls) -> KdfParams:
        """Return scrypt parameters with a fresh random salt."""
        return cls(kdf="scrypt", salt=os.urandom(16))


@dataclass(frozen=True, slots=True)
class Header:
    """The parsed, authenticated header of a cache file."""

    version: int
    kdf: KdfParams
    key_id: str
    raw: bytes  # everything before the nonce: the AEAD associated data


def key_id(key: bytes) -> str:
    """A short, non-secret fingerprint of a key, used to tell "wrong key" from "tampered file"."""
    import hashlib  # here: a read that decrypts never needs it, and `harvest cache get` starts faster

    return hashlib.sha256(b"harvest-cache-key-id\x00" + key).hexdigest()[:16]


def derive_key(passphrase: str, params: KdfParams) -> bytes:
    """Derive a 256-bit key from a passphrase with the file's scrypt parameters."""
    import hashlib

    return hashlib.scrypt(
        passphrase.encode(),
        salt=params.salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=SCRYPT_MAXMEM + 1024 * 1024,
        dklen=KEY_SIZE,
    )


def encode_key(key: bytes) -> str:
    """Return a key in the printable form `harvest cache keygen` prints: URL-safe base64."""
    return base64.urlsafe_b64encode(key).decode()


def decode_key(text: str) -> bytes:
    """Parse a URL-safe base64 key, raising ``WrongKeyError`` if it is not 32 bytes."""
    try:
        key = base64.urlsafe_b64decode(text.strip().encode() + b"==")
    except (ValueError, TypeError):
        raise WrongKeyError("the cache key is not URL-safe base64; make one with `harvest cache keygen`") from None
    if len(key) != KEY_SIZE:
        raise WrongKeyError(
            f"the cache key must be {KEY_SIZE} bytes, got {len(key)}; make one with `harvest cache keygen`"
        )
    return key


def seal(plaintext: bytes, key: bytes, kdf: KdfParams) -> bytes:
    """Encrypt a document's bytes into the bytes of a cache file (header, nonce, ciphertext)."""
    header: dict[str, Any] = {
        "kdf": kdf.kdf,
        "key_id": key_id(key),
    }
    if kdf.kdf == "scrypt":
        header |= {"n": kdf.n, "r": kdf.r, "p": kdf.p, "salt": base64.b64encode(kdf.salt).decode()}
    header_bytes = orjson.dumps(header, option=orjson.OPT_SORT_KEYS)
    raw = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(header_bytes)) + header_bytes
    raw += struct.pack(">I", zlib.crc32(header_bytes))
    nonce = os.urandom(NONCE_SIZE)
    return raw + nonce + AESGCM(key).encrypt(nonce, plaintext, raw)


def encrypt(document: dict[str, Any], key: bytes, kdf: KdfParams) -> bytes:
    """Serialise and encrypt one JSON document as it is (no index: what a build before the index wrote)."""
    return seal(orjson.dumps(document), key, kdf)


def read_header(data: bytes) -> Header:
    """Parse and check the header, raising ``CacheCorruptError`` for anything that is not a cache file."""
    if len(data) < _PREFIX.size or not data.startswith(MAGIC):
        raise CacheCorruptError("not a harvest cache file (bad magic)")
    _, version, hlen = _PREFIX.unpack_from(data)
    if version != FORMAT_VERSION:
        raise CacheCorruptError(f"unsupported cache format version {version} (this build reads {FORMAT_VERSION})")
    end = _PREFIX.size + hlen
    if len(data) < end + 4 + NONCE_SIZE + 16:
        raise CacheCorruptError("the cache file is truncated")
    header_bytes = data[_PREFIX.size : end]
    (crc,) = struct.unpack_from(">I", data, end)
    if zlib.crc32(header_bytes) != crc:
        raise CacheCorruptError("the cache file header is damaged")
    try:
        header = orjson.loads(header_bytes)
        kdf_name = header["kdf"]
        if kdf_name == "scrypt":
            kdf = _scrypt_params(header)
        elif kdf_name == "none":
            kdf = KdfParams()
        else:
            raise ValueError(kdf_name)
        kid = str(header["key_id"])
    except (orjson.JSONDecodeError, KeyError, ValueError, TypeError):
        raise CacheCorruptError("the cache file header is not valid") from None
    return Header(version=version, kdf=kdf, key_id=kid, raw=data[: end + 4])


def _scrypt_params(header: dict[str, Any]) -> KdfParams:
    """Scrypt parameters from a header, checked against sane bounds (``CacheCorruptError`` otherwise)."""
    n, r, p, salt_text = header["n"], header["r"], header["p"], header["salt"]
    for name, value, high in (("n", n, SCRYPT_MAX_N), ("r", r, SCRYPT_MAX_R), ("p", p, SCRYPT_MAX_P)):
        if type(value) is not int or not 1 <= value <= high:
            raise CacheCorruptError(f"the cache file header asks for scrypt {name}={value!r} (allowed: 1 to {high})")
    if n < 2 or n & (n - 1):
        raise CacheCorruptError(f"the cache file header asks for scrypt n={n} (it must be a power of two)")
    if 128 * n * r * p > SCRYPT_MAXMEM * 4 or 128 * n * r > SCRYPT_MAXMEM:
        raise CacheCorruptError("the cache file header asks for more scrypt memory or time than allowed")
    if not isinstance(salt_text, str):
        raise CacheCorruptError("the cache file header's scrypt salt is not a string")
    try:
        salt = base64.b64decode(salt_text, validate=True)
    except ValueError:
        raise CacheCorruptError("the cache file header's scrypt salt is not base64") from None
    if len(salt) not in SALT_SIZES:
        raise CacheCorruptError(f"the cache file header's scrypt salt is {len(salt)} bytes (allowed: 8 to 64)")
    return KdfParams("scrypt", salt, n, r, p)


def unseal(data: bytes, header: Header, key: bytes) -> bytes:
    """Decrypt a cache file whose header was read with :func:`read_header`; return the document's bytes."""
    start = len(header.raw)
    nonce = data[start : start + NONCE_SIZE]
    try:
        return AESGCM(key).decrypt(nonce, memoryview(data)[start + NONCE_SIZE :], header.raw)  # no copy
    except InvalidTag:
        # The key fingerprint in the (authenticated) header tells a wrong key from a damaged file.
        if key_id(key) != header.key_id:
            raise WrongKeyError("the cache file was written under another key") from None
        raise CacheCorruptError("the cache file failed authentication: it is tampered or truncated") from None


def decrypt(data: bytes, header: Header, key: bytes) -> dict[str, Any]:
    """Decrypt and parse a whole cache file (every record) whose header was read with :func:`read_header`."""
    return _parse_document(unseal(data, header, key))


def _parse_document(plaintext: bytes) -> dict[str, Any]:
    try:
        document = orjson.loads(plaintext)
    except orjson.JSONDecodeError:
        raise CacheCorruptError("the cache file decrypted but its document is not JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("records"), dict):
        raise CacheCorruptError("the cache file decrypted but holds no records document")
    return document


# The indexed document, byte by byte: _HEAD, the records (`"name":{...}` joined by commas), _INDEX_KEY, the index
# (JSON: name -> [start, end] of the record's JSON), then _AT_KEY, ten digits (where the index starts), _END.
_HEAD = b'{"version":%d,"records":{' % DOCUMENT_VERSION
_INDEX_KEY = b'},"index":'
_AT_KEY = b',"index_at":"'
_END = b'"}'
_TAIL_SIZE = len(_AT_KEY) + 10 + len(_END)


def pack_records(records: Mapping[str, bytes]) -> bytes:
    """The document for ``records`` (name -> the record's JSON bytes, in the order to store them), with its index.

    The same bytes as ``orjson.dumps`` of the document with those records and the two index keys.
    """
    parts = [_HEAD]
    pos = len(_HEAD)
    index: dict[str, tuple[int, int]] = {}
    for name, body in records.items():
        key = (b"," if index else b"") + orjson.dumps(name) + b":"
        pos += len(key)
        index[name] = (pos, pos + len(body))
        pos += len(body)
        parts += (key, body)
    pos += len(_INDEX_KEY)
    parts += (_INDEX_KEY, orjson.dumps(index), _AT_KEY, b"%010d" % pos, _END)
    return b"".join(parts)


class IndexedRecords(Mapping[str, memoryview]):
    """The records of a document with a sound index: name -> that record's JSON bytes, sliced when asked for."""

    __slots__ = ("_document", "_spans")

    def __init__(self, document: bytes, spans: dict[str, list[int]]) -> None:
        self._document = document
        self._spans = spans

    def __getitem__(self, name: str) -> memoryview:
        start, end = self._spans[name]
        return memoryview(self._document)[start:end]

    def get(self, name: str, default: Any = None) -> Any:  # Mapping.get, without its try/except
        return self[name] if name in self._spans else default

    def __contains__(self, name: object) -> bool:
        return name in self._spans

    def __iter__(self) -> Iterator[str]:
        return iter(self._spans)

    def __len__(self) -> int:
        return len(self._spans)


def unpack_records(plaintext: bytes) -> Mapping[str, Any]:
    """Each record of a decrypted document, by name: its JSON bytes (parsed when asked for) where the document
    carries a sound index, else its parsed JSON (a document without one is parsed whole).

    Raises:
        CacheCorruptError: the document is not JSON, or holds no records object.
    """
    spans = _index(plaintext)
    if spans is not None:
        return IndexedRecords(plaintext, spans)
    records: dict[str, Any] = _parse_document(plaintext)["records"]
    return records


def _index(plaintext: bytes) -> dict[str, list[int]] | None:
    """The document's index (name -> [start, end] of the record's JSON), or None when it has none, or one that does
    not tile the records exactly (a tool that edited the parsed document and kept the old index): then the document
    is parsed whole."""
    size = len(plaintext)
    tail = size - _TAIL_SIZE
    if tail < len(_HEAD) + len(_INDEX_KEY) or not plaintext.endswith(_END) or not plaintext.startswith(_AT_KEY, tail):
        return None
    digits = plaintext[tail + len(_AT_KEY) : size - len(_END)]
    if not digits.isdigit():
        return None
    at = int(digits)
    if not len(_HEAD) + len(_INDEX_KEY) <= at <= tail or not plaintext.startswith(_INDEX_KEY, at - len(_INDEX_KEY)):
        return None
    try:
        index = orjson.loads(memoryview(plaintext)[at:tail])
    except orjson.JSONDecodeError:
        return None
    if type(index) is not dict:
        return None
    # Every record must sit right after its `"name":`, each after the one before, the last right before the index:
    # then the spans are exactly the records object's values (each is checked as JSON when it is parsed). A name
    # that JSON escapes (never one of ours: see NAME_RULE) is not found as its plain bytes: the whole is parsed.
    # Checked with builtins (zip, map, join) rather than a Python loop per record, and every entry must be a pair
    # of ints: the loop let [28.0, 44] through, and that get then raised TypeError instead of parsing the whole.
    if not index:
        return index if at == len(_HEAD) + len(_INDEX_KEY) else None
    try:
        starts, ends = zip(*index.values(), strict=True)  # ValueError unless every entry is a pair
        # The bytes between records: before the first one, between each two. Compared whole, so each is the
        # separator it must be (`"a":`, then `,"b":`, ...) and so each record starts where its name ends.
        gaps = list(map(plaintext.__getitem__, map(slice, (len(_HEAD), *ends[:-1]), starts)))
        separators = ('"' + '":\0,"'.join(index) + '":').encode().split(b"\0")  # NUL: no name of ours has one
        if (
            gaps != separators
            or min(starts) <= 0
            or ends[-1] != at - len(_INDEX_KEY)
            or not all(map(operator.le, starts, ends))
        ):
            return None
    except (TypeError, ValueError, UnicodeEncodeError):  # an entry that is not [start, end] of ints
        return None
    return index
