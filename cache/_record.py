"""The session record: what a harvest produces and what a client needs to reuse it."""

from __future__ import annotations

import dataclasses
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


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime."""
    return datetime.now(UTC)


def format_time(value: datetime | None) -> str | None:
    """Format an aware datetime as ISO-8601 UTC with a trailing ``Z``."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def parse_time(value: Any, key: str) -> datetime | None:
    """Parse an ISO-8601 string (or epoch seconds) into an aware UTC datetime."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if not isinstance(value, str):
        raise ValueError(f"{key}: expected an ISO-8601 string, got {type(value).__name__}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{key}: {value!r} is not an ISO-8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


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
        if not isinstance(data, Mapping):
            raise ValueError("cookie: expected an object")
        unknown = set(data) - set(COOKIE_KEYS)
        if unknown:
            raise ValueError(f"cookie: unknown keys {sorted(unknown)}")
        for key in ("name", "value"):
            if not isinstance(data.get(key), str):
                raise ValueError(f"cookie.{key}: expected a string")
        expires = data.get("expires")
        if expires is not None and (isinstance(expires, bool) or not isinstance(expires, int | float)):
            raise ValueError("cookie.expires: expected epoch seconds or null")
        same_site = data.get("same_site")
        if same_site is not None and same_site not in ("Strict", "Lax", "None"):
            raise ValueError(f"cookie.same_site: {same_site!r} is not Strict, Lax or None")
        return cls(
            name=data["name"],
            value=data["value"],
            domain=str(data.get("domain") or ""),
            path=str(data.get("path") or "/"),
            expires=None if expires is None or expires < 0 else float(expires),
            http_only=bool(data.get("http_only", False)),
            secure=bool(data.get("secure", False)),
            same_site=same_site,
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
    def from_json(cls, data: Mapping[str, Any]) -> SessionRecord:
        """Build a record from its JSON form, raising ``ValueError`` that names the bad key."""
        if not isinstance(data, Mapping):
            raise ValueError("record: expected a JSON object")
        unknown = set(data) - set(RECORD_KEYS)
        if unknown:
            raise ValueError(f"record: unknown keys {sorted(unknown)}")
        provider = data.get("provider")
        if not isinstance(provider, str) or not provider:
            raise ValueError("provider: expected a non-empty string")
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
        return cls(
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


def _mask_proxy(proxy: str | None) -> str | None:
    """Hide a password in a proxy URL, as httpx's ``Proxy.__repr__`` does."""
    if not proxy or "@" not in proxy:
        return proxy
    scheme, _, rest = proxy.rpartition("://")
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if scheme else f"{user}:***@{host}"
