"""The document inside a cache blob: its record index, and reading and writing it beside builds without one."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cache import AuthCache, CacheCorruptError, Storage
from cache._format import decrypt, encrypt, pack_records, read_header, seal, unpack_records, unseal

from .conftest import stored_blob
from .test_record import make_record

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


def _plain(records: object) -> dict[str, object]:
    """Records as plain JSON values, whether unpacked from their bytes or parsed with the whole document."""
    assert isinstance(records, dict) or hasattr(records, "items")
    return {name: orjson.loads(raw) if isinstance(raw, bytes | memoryview) else raw for name, raw in records.items()}


@settings(max_examples=200, deadline=None)
@given(records=st.dictionaries(st.text(max_size=6), json_values, max_size=6))
def test_a_packed_document_is_the_plain_document_with_an_index(records: dict[str, object]) -> None:
    """pack_records gives the bytes orjson gives for the document (plus two index keys); unpacking gives the records."""
    bodies = {name: orjson.dumps(value) for name, value in records.items()}
    packed = pack_records(bodies)
    document = orjson.loads(packed)
    assert list(document) == ["version", "records", "index", "index_at"] and document["version"] == 1
    assert packed.startswith(orjson.dumps({"version": 1, "records": records})[:-2])
    assert _plain(unpack_records(packed)) == records


def test_a_document_without_an_index_is_parsed_whole() -> None:
    """The document a build before the index wrote reads the same (parsed whole)."""
    records = {"a": {"provider": "a"}, "b": [1, 2]}
    unpacked = unpack_records(orjson.dumps({"version": 1, "records": records}))
    assert isinstance(unpacked, dict) and unpacked == records


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d["records"].__setitem__("new", {"provider": "new"}),  # a record added after "b"
        lambda d: d["records"].__setitem__("a", {"provider": "a", "extras": {"grown": True}}),  # one grows
        lambda d: d["records"].pop("a"),
        lambda d: d["index"].__setitem__("a", [0, 5]),
        lambda d: d["index"].__setitem__("a", "x"),
        lambda d: d.__setitem__("index", [1, 2]),
        lambda d: d.__setitem__("index_at", "12"),
        lambda d: d.__setitem__("index_at", "00000000zz"),
    ],
)
def test_an_index_that_does_not_fit_its_document_is_not_trusted(edit) -> None:  # type: ignore[no-untyped-def]
    """A document edited as JSON with its old index kept (or a broken index) is parsed whole, so reads stay true."""
    packed = pack_records({"a": orjson.dumps({"provider": "a"}), "b": orjson.dumps({"provider": "b"})})
    document = orjson.loads(packed)
    edit(document)
    edited = orjson.dumps(document)
    unpacked = unpack_records(edited)
    assert isinstance(unpacked, dict) and unpacked == document["records"]


def _with_index(index: object) -> bytes:
    """The records a and b (packed), followed by ``index`` in place of theirs, with a sound ``index_at``."""
    packed = pack_records({"a": orjson.dumps({"provider": "a"}), "b": orjson.dumps({"provider": "b"})})
    at = int(packed[-12:-2])
    return packed[:at] + orjson.dumps(index) + b',"index_at":"%010d"}' % at


@pytest.mark.parametrize(
    "index",
    [
        {"a": [28, 45], "b": [50, 65]},  # a ends one byte late (on its comma), b starts one byte late
        {"a": [28, 44], "b": [48, 65]},  # b starts one byte early
        {"a": [28 - 125, 44], "b": [49, 65]},  # a negative start that slices the same bytes
        {"a": [28, 44], "b": [49, 65], "c": [65, 65]},  # an entry for no record
        {"b": [49, 65], "a": [28, 44]},  # the right spans, in another order than the records
        {"a": [44, 28], "b": [49, 65]},
        {"a": [28.0, 44], "b": [49, 65]},
        {"a": [28, 44, 0], "b": [49, 65, 0]},
        {"a": [28, 44], "b": [49]},
        {"a": "28", "b": [49, 65]},
        {"a": None, "b": [49, 65]},
    ],
)
def test_an_index_whose_spans_do_not_tile_the_records_is_not_trusted(index: object) -> None:
    """An index whose spans are off, out of order, misshapen or for records that are not there is not used."""
    sound = {"a": [28, 44], "b": [49, 65]}
    assert not isinstance(unpack_records(_with_index(sound)), dict) and len(_with_index(sound)) == 125
    unpacked = unpack_records(_with_index(index))
    assert isinstance(unpacked, dict) and unpacked == {"a": {"provider": "a"}, "b": {"provider": "b"}}


@pytest.mark.parametrize("plaintext", [b"not json", b"[]", b'{"records": []}', b'{"version":1,"records":{'])
def test_a_document_that_is_no_records_object_is_corrupt(plaintext: bytes) -> None:
    """Bytes that are not a records document raise CacheCorruptError (the AEAD vouches only for who wrote them)."""
    with pytest.raises(CacheCorruptError):
        unpack_records(plaintext)


def _rewrite(storage: Storage, plaintext: bytes) -> None:
    """Replace the stored blob with ``plaintext``, encrypted under the same key (as another build would write it)."""
    _, header, key, version = stored_blob(storage)
    with storage.lock(5):
        storage.save(seal(plaintext, key, header.kdf), version)


def test_a_blob_this_build_writes_reads_whole_as_before(storage: Storage, location: str) -> None:
    """A build that parses the whole document (before the index) reads every record this build wrote."""
    cache = AuthCache.open(location)
    cache.put(make_record())
    cache.put(make_record(provider="deepinfra"))
    data, header, key, _ = stored_blob(storage)
    document = decrypt(data, header, key)
    assert document["version"] == 1
    assert document["records"] == {
        "cerebras": make_record().to_json(),
        "deepinfra": make_record(provider="deepinfra").to_json(),
    }


def test_a_blob_written_without_an_index_reads_and_takes_writes(storage: Storage, location: str) -> None:
    """A blob a build before the index wrote reads in this build, and a write over it keeps every record."""
    cache = AuthCache.open(location)
    cache.put(make_record())
    _, header, key, _ = stored_blob(storage)
    old = {"version": 1, "records": {"cerebras": make_record().to_json(), "old": make_record(provider="old").to_json()}}
    _rewrite(storage, orjson.dumps(old))
    assert encrypt(old, key, header.kdf)  # the same bytes an older build's encrypt() makes
    fresh = AuthCache.open(location)
    assert fresh.get("old") == make_record(provider="old")
    fresh.put(make_record(provider="new"))
    assert [r.provider for r in AuthCache.open(location).list()] == ["cerebras", "new", "old"]
    data, _ = storage.load()
    assert data is not None
    assert not isinstance(unpack_records(unseal(data, read_header(data), key)), dict)  # written with an index


def test_a_record_whose_json_is_damaged_fails_alone(storage: Storage, location: str) -> None:
    """In a sound blob, a record whose bytes are not JSON is CacheCorruptError where it is read; others still read."""
    cache = AuthCache.open(location)
    cache.put(make_record())
    _rewrite(storage, pack_records({"broken": b'{"provider": "bro', "cerebras": orjson.dumps(make_record().to_json())}))
    fresh = AuthCache.open(location)
    assert fresh.get("cerebras") == make_record()  # only the record asked for is parsed
    for read in (lambda: fresh.get("broken"), fresh.list, lambda: fresh.put(make_record(provider="other"))):
        with pytest.raises(CacheCorruptError, match=r"a record is malformed .*cache reset"):
            read()


def test_a_write_keeps_the_bytes_of_records_it_did_not_change(storage: Storage, location: str) -> None:
    """Records a write did not touch are stored as the very bytes they were read as (no re-serialising)."""
    cache = AuthCache.open(location)
    cache.put(make_record())
    # Stored with a key order our serialiser would not give: kept as it is while unchanged.
    odd = orjson.dumps(dict(reversed(list(make_record(provider="odd").to_json().items()))))
    plain = orjson.dumps(make_record().to_json())
    _rewrite(storage, pack_records({"cerebras": plain, "odd": odd}))
    AuthCache.open(location).put(make_record(provider="zeta"))
    data, header, key, _ = stored_blob(storage)
    records = unpack_records(unseal(data, header, key))
    assert bytes(records["odd"]) == odd and bytes(records["cerebras"]) == plain
    assert AuthCache.open(location).get("odd") == make_record(provider="odd")
