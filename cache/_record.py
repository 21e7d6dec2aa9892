"""The session record: what a harvest produces and what a client needs to reuse it."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

SameSite = Literal["Strict", "Lax", "None"]

#: The exact keys of a record's JSON form (`harvest cache get --json`, `harvest cache put`).
RECORD_KEYS = (
    "provider",
    "cookies",
    "user_agent",
    "headers",
    "api_key",
    "extras",
    "proxy",
    "browser",
    "impersonate",
    "origin",
    "harvested_at",
    "expires_at",
)
COOKIE_KEYS = ("name", "value", "domain", "path", "expires", "http_only", "secure", "same_site")
_COOKIE_KEY_SET = frozenset(COOKIE_KEYS)
_RECORD_KEY_SET = frozenset(RECORD_KEYS)
_SAME_SITES = ("Strict", "Lax", "None")

#: What a record name (the provider, or ``--name``) must match, after lower-casing.
NAME_RULE = "[a-z0-9][a-z0-9._-]{0,63}"
_NAME = re.compile(NAME_RULE)
#: Characters that would split a header or a cookies.txt line: never allowed in a cookie field or a header.
_BAD_CHARS = re.compile("[\r\n\t\x00]")
_BAD_NAMES = {"\r": "a carriage return (CR)", "\n": "a line feed (LF)", "\t": "a tab", "\x00": "a NUL byte"}
#: Times a record may carry, in epoch seconds: 1970-01-01 to 9999-12-31 (beyond it, datetime overflows).
MIN_EPOCH = 0.0
MAX_EPOCH = 253402300799.0
MAX_EXTRAS_DEPTH = 32


class RecordError(ValueError):
    """A record (or a part of it) breaks a rule; ``field`` names the part, the message says the rule."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def check_name(name: object, field: str = "name") -> str:
    """Return ``name`` if it is a valid record name, else raise ``RecordError`` stating the rule."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RecordError(
            field,
            f"{name!r} is not a valid record name (lower-case letters, digits, '.', '_', '-'; must match {NAME_RULE})",
        )
    return name


def normalize_name(name: object, field: str = "name") -> str:
    """Lower-case a record name and check it against ``NAME_RULE``."""
    return check_name(name.lower() if isinstance(name, str) else name, field)


def _check_text(value: object, field: str) -> None:
    if not isinstance(value, str):
        raise RecordError(field, f"expected a string, got {type(value).__name__}")
    bad = _BAD_CHARS.search(value)
    if bad:
        raise RecordError(field, f"contains {_BAD_NAMES[bad.group()]}; CR, LF, NUL and TAB are not allowed")


def _check_epoch(value: float, field: str) -> float:
    if not math.isfinite(value) or not MIN_EPOCH <= value <= MAX_EPOCH:
        raise RecordError(field, f"{value!r} is out of range (epoch seconds from 0 to {MAX_EPOCH:.0f}, year 9999)")
    return value


def _check_depth(value: object, field: str) -> None:
    """Refuse containers nested deeper than ``MAX_EXTRAS_DEPTH`` (iteratively: no recursion to overflow)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_EXTRAS_DEPTH:
                raise RecordError(field, f"nested deeper than {MAX_EXTRAS_DEPTH} levels")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def format_time(value: datetime | None) -> str | None:
    """Format an aware datetime as ISO-8601 UTC with a trailing ``Z``."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: Any, key: str) -> datetime | None:
    """Parse an ISO-8601 string (or epoch seconds) into an aware UTC datetime between 1970 and 9999."""
    if value is None:
        return None
    if type(value) is not str:  # the common case (a string) first: every cold cache read parses two per record
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(_check_epoch(value, key), UTC)
        raise ValueError(f"{key}: expected an ISO-8601 string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{key}: {value!r} is not an ISO-8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        result = parsed.astimezone(UTC)
    except OverflowError:
        raise RecordError(key, f"{value!r} is out of range (1970 to 9999)") from None
    if not _MIN_TIME <= result <= _MAX_TIME:
        _check_time(result, key)
    return result


_MIN_TIME = datetime.fromtimestamp(MIN_EPOCH, UTC)
_MAX_TIME = datetime.fromtimestamp(MAX_EPOCH, UTC)


def _check_time(value: datetime, field: str) -> None:
    if not _MIN_TIME <= value <= _MAX_TIME:
        raise RecordError(field, f"{format_time(value)!r} is out of range (1970 to 9999)")


@dataclass(frozen=True, slots=True)
class Cookie:
    """One browser cookie with all its attributes; ``repr`` never shows the value."""

    name: str
    value: str = field(repr=False)
    domain: str = ""
    path: str = "/"
    expires: float | None = None
    http_only: bool = False
    secure: bool = False
    same_site: SameSite | None = None

    def to_json(self) -> dict[str, Any]:
        """Return the cookie as a JSON-able dict with the contract's keys."""
        return {
            "name": self.name,
            "value": self.value,
            "domain": self.domain,
            "path": self.path,
            "expires": self.expires,
            "http_only": self.http_only,
            "secure": self.secure,
            "same_site": self.same_site,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cookie:
        """Build a cookie from its JSON form, raising ``ValueError`` on a bad shape."""
        # Every cold cache read builds each cookie of the record asked for: the common case (a dict of known keys,
        # all the right types) costs one superset test and a get per key.
        if type(data) is not dict and not isinstance(data, Mapping):
            raise ValueError("cookie: expected an object")
        if not _COOKIE_KEY_SET.issuperset(data):
            raise ValueError(f"cookie: unknown keys {sorted(set(data) - _COOKIE_KEY_SET)}")
        get = data.get
        name, value = get("name"), get("value")
        if type(name) is not str and not isinstance(name, str):
            raise ValueError("cookie.name: expected a string")
        if type(value) is not str and not isinstance(value, str):
            raise ValueError("cookie.value: expected a string")
        expires = get("expires")
        if expires is not None:
            if isinstance(expires, bool) or not isinstance(expires, int | float):
                raise ValueError("cookie.expires: expected epoch seconds or null")
            if expires >= 0:
                _check_epoch(expires, "cookie.expires")
            expires = None if expires < 0 else float(expires)  # a session cookie (-1) has none
        same_site = get("same_site")
        if same_site is not None and same_site not in _SAME_SITES:
            raise ValueError(f"cookie.same_site: {same_site!r} is not Strict, Lax or None")
        return cls(
            name,
            value,
            str(get("domain") or ""),
            str(get("path") or "/"),
            expires,
            bool(get("http_only", False)),
            bool(get("secure", False)),
            same_site,
        )


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A harvested provider session: cookies, user agent, client hints and secrets.

    ``repr`` and ``str`` show names only: never cookie values, the API key or header values.
    """

    provider: str
    cookies: list[Cookie] = field(default_factory=list)
    user_agent: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    api_key: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    proxy: str | None = None
    browser: str | None = None
    impersonate: str | None = None
    origin: str | None = None
    harvested_at: datetime = field(default_factory=utcnow)
    expires_at: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("harvested_at", "expires_at"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be an aware datetime")

    def validate(self) -> SessionRecord:
        """Check every rule a stored or exported record must meet; return self, or raise ``RecordError``.

        The name matches ``NAME_RULE``; no cookie field, header name or value, user agent or API key holds CR, LF,
        NUL or TAB (they would inject lines into headers and cookies.txt); times lie in 1970..9999; ``extras`` is
        nested at most ``MAX_EXTRAS_DEPTH`` deep. Messages name the field, never a secret value.
        """
        check_name(self.provider, "provider")
        for index, cookie in enumerate(self.cookies):
            if not isinstance(cookie, Cookie):
                raise RecordError(f"cookies[{index}]", "expected a Cookie")
            _check_text(cookie.name, f"cookies[{index}].name")
            label = f"cookies[{index}] ({cookie.name!r})"
            _check_text(cookie.value, f"{label}.value")
            _check_text(cookie.domain, f"{label}.domain")
            _check_text(cookie.path, f"{label}.path")
            if cookie.expires is not None and not cookie.expires < 0:  # NaN too
                _check_epoch(cookie.expires, f"{label}.expires")
        for name, value in self.headers.items():
            _check_text(name, f"headers[{name!r}] (name)")
            _check_text(value, f"headers[{name!r}]")
        _check_text(self.user_agent, "user_agent")
        if self.api_key is not None:
            _check_text(self.api_key, "api_key")
        _check_time(self.harvested_at, "harvested_at")
        if self.expires_at is not None:
            _check_time(self.expires_at, "expires_at")
        if not isinstance(self.extras, dict):
            raise RecordError("extras", "expected an object")
        _check_depth(self.extras, "extras")
        return self

    @property
    def is_expired(self) -> bool:
        """True once ``expires_at`` has passed (a record with no expiry never expires)."""
        return self.expires_at is not None and self.expires_at <= utcnow()

    def cookie_dict(self) -> dict[str, str]:
        """Return ``{name: value}`` for the cookies, as HTTP clients take them."""
        return {cookie.name: cookie.value for cookie in self.cookies}

    def replace(self, **changes: Any) -> SessionRecord:
        """Return a copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def __repr__(self) -> str:
        proxy = _mask_proxy(self.proxy)
        return (
            f"SessionRecord(provider={self.provider!r}, cookies={[c.name for c in self.cookies]!r}, "
            f"user_agent={self.user_agent!r}, headers={sorted(self.headers)!r}, "
            f"api_key={'***' if self.api_key else None!r}, extras={sorted(self.extras)!r}, "
            f"proxy={proxy!r}, browser={self.browser!r}, impersonate={self.impersonate!r}, "
            f"origin={self.origin!r}, harvested_at={format_time(self.harvested_at)!r}, "
            f"expires_at={format_time(self.expires_at)!r})"
        )

    __str__ = __repr__

    def to_json(self) -> dict[str, Any]:
        """Return the record as a JSON-able dict with exactly the contract's keys."""
        return {
            "provider": self.provider,
            "cookies": [cookie.to_json() for cookie in self.cookies],
            "user_agent": self.user_agent,
            "headers": dict(self.headers),
            "api_key": self.api_key,
            "extras": dict(self.extras),
            "proxy": self.proxy,
            "browser": self.browser,
            "impersonate": self.impersonate,
            "origin": self.origin,
            "harvested_at": format_time(self.harvested_at),
            "expires_at": format_time(self.expires_at),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, validate: bool = True) -> SessionRecord:
        """Build a record from its JSON form, raising ``ValueError`` (a ``RecordError``) that names the bad key.

        The provider name is lower-cased. ``validate=False`` skips :meth:`validate` (for records the cache
        already checked when they were written; the shape is still checked).
        """
        if type(data) is not dict and not isinstance(data, Mapping):
            raise ValueError("record: expected a JSON object")
        if not _RECORD_KEY_SET.issuperset(data):
            raise ValueError(f"record: unknown keys {sorted(set(data) - _RECORD_KEY_SET)}")
        provider = data.get("provider")
        if validate:
            provider = normalize_name(provider, "provider")
        elif not isinstance(provider, str) or not provider:
            raise ValueError("provider: expected a non-empty string")
        extras_raw = data.get("extras")
        if validate and extras_raw is not None:
            _check_depth(extras_raw, "extras")
        cookies = data.get("cookies") or []
        if not isinstance(cookies, list):
            raise ValueError("cookies: expected a list")
        headers = data.get("headers") or {}
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValueError("headers: expected an object of strings")
        extras = data.get("extras") or {}
        if not isinstance(extras, dict):
            raise ValueError("extras: expected an object")
        for key in ("user_agent", "api_key", "proxy", "browser", "impersonate", "origin"):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"{key}: expected a string or null")
        record = cls(
            provider=provider,
            cookies=[Cookie.from_json(c) for c in cookies],
            user_agent=data.get("user_agent") or "",
            headers=dict(headers),
            api_key=data.get("api_key"),
            extras=dict(extras),
            proxy=data.get("proxy"),
            browser=data.get("browser"),
            impersonate=data.get("impersonate"),
            origin=data.get("origin"),
            harvested_at=parse_time(data.get("harvested_at"), "harvested_at") or utcnow(),
            expires_at=parse_time(data.get("expires_at"), "expires_at"),
        )
        return record.validate() if validate else record


def _mask_proxy(proxy: str | None) -> str | None:
    """Hide a password in a proxy URL, as httpx's ``Proxy.__repr__`` does."""
    if not proxy or "@" not in proxy:
        return proxy
    scheme, _, rest = proxy.rpartition("://")
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if scheme else f"{user}:***@{host}"
