"""Pure session logic: the identity a record gives a request, and merging Set-Cookie back into it."""

from __future__ import annotations

from cache import Cookie, SessionRecord
from providers._session import FALLBACK_USER_AGENT, identity_for, merge_set_cookies, parse_set_cookie

from .conftest import CLIENT_HINTS, USER_AGENT


def record() -> SessionRecord:
    return SessionRecord(
        provider="cloudflare",
        cookies=[Cookie("cf_clearance", "old", ".example.com"), Cookie("keep", "1")],
        user_agent=USER_AGENT,
        headers={**CLIENT_HINTS, "Content-Length": "12", "Cookie": "stale=1"},
        impersonate="chrome142",
        api_key="k",
    )


def test_identity_replays_ua_and_hints_only() -> None:
    """The record's UA, client hints, cookies and target are used; per-request headers are not replayed."""
    identity = identity_for(record(), cookies={"extra": "2"})
    lines = dict(identity.header_lines())
    assert lines["User-Agent"] == USER_AGENT
    assert lines["sec-ch-ua"] == CLIENT_HINTS["sec-ch-ua"]
    assert "Content-Length" not in lines
    assert lines["Cookie"] == "cf_clearance=old; keep=1; extra=2"
    assert identity.impersonate == "chrome142"
    assert identity.api_key == "k"


def test_identity_without_record_uses_fallback_browser() -> None:
    """Without a record the fallback Chrome identity is used, impersonating chrome."""
    identity = identity_for(None)
    assert identity.user_agent == FALLBACK_USER_AGENT
    assert identity.impersonate == "chrome"


def test_parse_set_cookie_attributes() -> None:
    """Set-Cookie attributes are parsed, and Max-Age=0 marks a deletion."""
    cookie, deleted = parse_set_cookie("a=b; Path=/x; Domain=.e.com; Max-Age=60; HttpOnly; Secure; SameSite=lax", 100.0)
    assert (cookie.name, cookie.value, cookie.path, cookie.domain, cookie.expires) == ("a", "b", "/x", ".e.com", 160.0)
    assert cookie.http_only and cookie.secure and cookie.same_site == "Lax" and not deleted
    assert parse_set_cookie("a=; Max-Age=0", 100.0)[1]


def test_merge_set_cookies() -> None:
    """New values replace old ones (keeping the domain), deletions remove, and no change gives None."""
    original = record()
    merged = merge_set_cookies(original, ["cf_clearance=new; Path=/", "keep=; Max-Age=0", "fresh=3"])
    assert merged is not None
    cookies = {c.name: c for c in merged.cookies}
    assert cookies["cf_clearance"].value == "new" and cookies["cf_clearance"].domain == ".example.com"
    assert "keep" not in cookies and cookies["fresh"].value == "3"
    assert merged.harvested_at == original.harvested_at  # the same session, only its cookies moved on
    assert merge_set_cookies(record(), ["keep=1"]) is None
