"""The session record: its JSON contract and its redaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cache import Cookie, SessionRecord
from cache._record import RECORD_KEYS

SECRETS = ("cookie-secret-value", "csk-api-secret", "header-secret-value", "proxy-password")


def make_record(**changes: object) -> SessionRecord:
    record = SessionRecord(
        provider="cerebras",
        cookies=[
            Cookie("cf_clearance", "cookie-secret-value", ".example.com", "/", 1.8e9, True, True, "None"),
            Cookie("_pg_visit", "1"),
        ],
        user_agent="Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0.0.0 Safari/537.36",
        headers={"sec-ch-ua": '"Chromium";v="156"', "x-secret": "header-secret-value"},
        api_key="csk-api-secret",
        extras={"plan": "demo"},
        proxy="http://user:proxy-password@127.0.0.1:3128",
        browser="Chromium/156",
        impersonate="chrome136",
        origin="https://inference.cerebras.ai",
        harvested_at=datetime(2026, 11, 22, 1, 0, tzinfo=UTC),
        expires_at=datetime(2026, 11, 22, 2, 0, tzinfo=UTC),
    )
    return record.replace(**changes) if changes else record


def test_repr_and_str_hide_every_secret() -> None:
    """repr and str name cookies and headers but never show their values, the API key or a proxy password."""
    record = make_record()
    for text in (repr(record), str(record), repr(record.cookies[0])):
        for secret in SECRETS:
            assert secret not in text
    assert "cf_clearance" in repr(record) and "sec-ch-ua" in repr(record)


def test_json_has_exactly_the_contract_keys_and_round_trips() -> None:
    """to_json emits exactly the documented keys, and from_json rebuilds an equal record."""
    data = make_record().to_json()
    assert tuple(data) == RECORD_KEYS
    assert set(data["cookies"][0]) == {"name", "value", "domain", "path", "expires", "http_only", "secure", "same_site"}
    assert data["harvested_at"] == "2026-11-22T01:00:00Z"
    assert SessionRecord.from_json(data) == make_record()


def test_from_json_names_the_bad_key() -> None:
    """A malformed record is rejected with a message naming the offending key."""
    data = make_record().to_json()
    with pytest.raises(ValueError, match="expires_at"):
        SessionRecord.from_json(data | {"expires_at": "yesterday"})
    with pytest.raises(ValueError, match="unknown keys"):
        SessionRecord.from_json(data | {"surprise": 1})
    with pytest.raises(ValueError, match="same_site"):
        SessionRecord.from_json(data | {"cookies": [data["cookies"][0] | {"same_site": "Sometimes"}]})


def test_expiry_and_cookie_dict() -> None:
    """is_expired follows expires_at, and cookie_dict maps names to values."""
    now = datetime.now(UTC)
    assert make_record(expires_at=now - timedelta(seconds=1)).is_expired
    assert not make_record(expires_at=now + timedelta(hours=1)).is_expired
    assert not make_record(expires_at=None).is_expired
    assert make_record().cookie_dict() == {"cf_clearance": "cookie-secret-value", "_pg_visit": "1"}


def test_naive_datetimes_are_refused() -> None:
    """Times must be aware, so that expiry comparisons cannot silently mix zones."""
    with pytest.raises(ValueError, match="aware"):
        SessionRecord(provider="x", expires_at=datetime(2026, 1, 1))
