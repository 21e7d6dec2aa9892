"""Property tests: arbitrary bytes at the file parser and arbitrary JSON at record parsing and `cache put`.

The only outcomes allowed are a record (or an empty cache) or a typed error: never another exception.
"""

from __future__ import annotations

import base64
import os
import struct
import zlib
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cache import AuthCache, CacheError, SessionRecord
from cache._format import read_header

from .test_record import make_record

PROFILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
record_keys = st.sampled_from(list(make_record().to_json()))


def _mutated_record() -> st.SearchStrategy[dict]:
    """A valid record's JSON with some keys replaced by arbitrary JSON (finds more than random dicts alone)."""
    return st.dictionaries(record_keys, json_values, max_size=4).map(lambda changes: make_record().to_json() | changes)


def _cookie_mutations() -> st.SearchStrategy[dict]:
    keys = st.sampled_from(["name", "value", "domain", "path", "expires", "http_only", "secure", "same_site", "x"])

    def apply(changes: dict) -> dict:
        data = make_record().to_json()
        data["cookies"][0] = data["cookies"][0] | changes
        return data

    return st.dictionaries(keys, json_values, max_size=3).map(apply)


@PROFILE
@given(data=json_values | _mutated_record() | _cookie_mutations())
def test_record_parsing_gives_a_record_or_a_value_error(data: object) -> None:
    """SessionRecord.from_json on any JSON returns a valid, round-tripping record or raises ValueError."""
    try:
        record = SessionRecord.from_json(data)  # type: ignore[arg-type]
    except ValueError:
        return
    assert SessionRecord.from_json(orjson.loads(orjson.dumps(record.to_json()))) == record


@PROFILE
@given(blob=st.binary(max_size=300))
def test_arbitrary_bytes_in_the_cache_file_give_a_cache_error(blob: bytes, tmp_path: Path) -> None:
    """Any bytes where the cache file belongs read as a CacheError (or an empty cache), never anything else."""
    path = tmp_path / "prop.cache"
    path.write_bytes(blob)
    try:
        AuthCache.open(path, key=base64.urlsafe_b64encode(b"k" * 32).decode()).list()
    except CacheError:
        pass


@PROFILE
@given(header=json_values, tail=st.binary(min_size=28, max_size=80))
def test_any_header_json_with_a_valid_crc_gives_a_header_or_a_cache_error(header: object, tail: bytes) -> None:
    """A CRC-valid header holding arbitrary JSON parses or raises CacheError, and decrypting it fails typed."""
    raw = orjson.dumps(header)
    data = b"HARVEST\x00" + struct.pack(">BH", 1, len(raw)) + raw + struct.pack(">I", zlib.crc32(raw)) + tail
    try:
        read_header(data)
    except CacheError:
        pass


@PROFILE
@given(kdf=st.fixed_dictionaries({"kdf": st.just("scrypt"), "key_id": st.text(max_size=4)}, optional={
    "n": json_values, "r": json_values, "p": json_values,
    "salt": st.binary(max_size=70).map(lambda b: base64.b64encode(b).decode()) | json_values,
}))  # fmt: skip
def test_any_scrypt_header_is_bounded_or_refused(kdf: dict) -> None:
    """Scrypt headers with any parameter values either stay within the cost bounds or raise CacheError."""
    raw = orjson.dumps(kdf)
    data = b"HARVEST\x00" + struct.pack(">BH", 1, len(raw)) + raw + struct.pack(">I", zlib.crc32(raw)) + os.urandom(40)
    try:
        header = read_header(data)
    except CacheError:
        return
    assert 128 * header.kdf.n * header.kdf.r <= 256 * 1024 * 1024 and header.kdf.p <= 16


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=json_values | _mutated_record() | _cookie_mutations())
def test_cache_put_of_any_json_is_stored_or_exit_2(data: object, runner: CliRunner) -> None:
    """`harvest cache put -` with any JSON document stores the record (exit 0) or exits 2; nothing else."""
    from harvester.cli import main

    result = runner.invoke(main, ["cache", "put", "-"], input=orjson.dumps(data))
    assert result.exit_code in (0, 2), (result.exit_code, result.output, result.exception)
    if result.exit_code == 2:
        assert result.exception is None or isinstance(result.exception, SystemExit)
