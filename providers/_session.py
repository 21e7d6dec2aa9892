"""Turning a cached ``SessionRecord`` into what a request sends, and ``Set-Cookie`` answers back into a record.

Pure functions: no I/O and no state.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cache import Cookie, SessionRecord

#: The curl_cffi target used when a record does not name one (or there is no record).
DEFAULT_IMPERSONATE = "chrome"
# Without a record we still look like the browser we impersonate: the UA and client hints of Chrome on Linux,
# never curl_cffi's own default User-Agent.
FALLBACK_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0.0.0 Safari/537.36"
)
FALLBACK_HEADERS = {
    "sec-ch-ua": '"Chromium";v="150", "Google Chrome";v="150", "Not.A/Brand";v="99"',
    "sec-ch-ua-mobile": "?0",
    "sec-ch-ua-platform": '"Linux"',
}
# Headers of a record that describe one past request, not the browser: never replayed.
_NOT_REPLAYED = frozenset(
    {"host", "content-length", "content-type", "cookie", "connection", "transfer-encoding", "user-agent", "accept"}
)


@dataclass(slots=True)
class RequestIdentity:
    """Who a request claims to be: the browser identity of a record, or the fallback one."""

    record: SessionRecord | None
    user_agent: str
    headers: list[tuple[str, str]]
    cookies: dict[str, str] = field(default_factory=dict)
    api_key: str | None = field(default=None, repr=False)
    proxy: str | None = field(default=None, repr=False)  # may carry a password
    impersonate: str | None = DEFAULT_IMPERSONATE

    def header_lines(self) -> list[tuple[str, str]]:
        """``User-Agent``, the client hints, then ``Cookie``: the identity part of every request."""
        lines = [("User-Agent", self.user_agent), *self.headers]
        if self.cookies:
            lines.append(("Cookie", "; ".join(f"{name}={value}" for name, value in self.cookies.items())))
        return lines


def identity_for(
    record: SessionRecord | None,
    *,
    cookies: Mapping[str, str] | None = None,
    api_key: str | None = None,
    proxy: str | None = None,
    impersonate: bool = True,
) -> RequestIdentity:
    """Build the identity of one call; explicit arguments win over the record's values."""
    if record is not None and record.user_agent:
        user_agent = record.user_agent
        headers = [(k, v) for k, v in record.headers.items() if k.lower() not in _NOT_REPLAYED]
        jar = record.cookie_dict()
        target = record.impersonate or DEFAULT_IMPERSONATE
    else:
        user_agent = FALLBACK_USER_AGENT
        headers = list(FALLBACK_HEADERS.items())
        jar = record.cookie_dict() if record is not None else {}
        target = (record.impersonate if record is not None else None) or DEFAULT_IMPERSONATE
    if cookies:
        jar.update(cookies)
    return RequestIdentity(
        record=record,
        user_agent=user_agent,
        headers=headers,
        cookies=jar,
        api_key=api_key or (record.api_key if record is not None else None),
        proxy=proxy or (record.proxy if record is not None else None),
        impersonate=target if impersonate else None,
    )


def parse_set_cookie(value: str, now: float | None = None) -> tuple[Cookie, bool]:
    """Parse one ``Set-Cookie`` value into a ``Cookie`` and whether it deletes the cookie (expired)."""
    from cache import Cookie

    now = time.time() if now is None else now
    pair, *attributes = value.split(";")
    name, _, cookie_value = pair.partition("=")
    attrs: dict[str, str] = {}
    for attribute in attributes:
        key, _, attr_value = attribute.strip().partition("=")
        attrs[key.lower()] = attr_value.strip()
    expires: float | None = None
    if "max-age" in attrs:
        try:
            expires = now + int(attrs["max-age"])
        except ValueError:
            expires = None
    elif attrs.get("expires"):
        import email.utils

        try:
            expires = email.utils.parsedate_to_datetime(attrs["expires"]).timestamp()
        except (TypeError, ValueError):
            expires = None
    same_site = attrs.get("samesite", "").capitalize() or None
    cookie = Cookie(
        name=name.strip(),
        value=cookie_value.strip().strip('"'),
        domain=attrs.get("domain", ""),
        path=attrs.get("path", "/") or "/",
        expires=expires,
        http_only="httponly" in attrs,
        secure="secure" in attrs,
        same_site=same_site if same_site in ("Strict", "Lax", "None") else None,  # type: ignore[arg-type]
    )
    return cookie, expires is not None and expires <= now


def merge_set_cookies(record: SessionRecord, set_cookies: Iterable[str]) -> SessionRecord | None:
    """The record with the response's cookies merged in, or None when they change nothing."""
    cookies: dict[str, Cookie] = {cookie.name: cookie for cookie in record.cookies}
    changed = False
    for raw in set_cookies:
        cookie, deleted = parse_set_cookie(raw)
        if not cookie.name:
            continue
        old = cookies.get(cookie.name)
        if deleted:
            if old is not None:
                del cookies[cookie.name]
                changed = True
        elif old is None or old.value != cookie.value or old.expires != cookie.expires:
            if old is not None and not cookie.domain:
                cookie = _with_domain(cookie, old.domain)
            cookies[cookie.name] = cookie
            changed = True
    return record.replace(cookies=list(cookies.values())) if changed else None


def _with_domain(cookie: Cookie, domain: str) -> Cookie:
    from dataclasses import replace

    return replace(cookie, domain=domain)
