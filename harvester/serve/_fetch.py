"""Fetch a page as the harvested browser would: the record's cookies, user agent, client hints, proxy and TLS
fingerprint, over the providers' curl transport. Redirects are followed here (the transport never follows them),
with the cookies each hop sets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from cache import Cookie, SessionRecord
from harvester._classify import PageState, classify
from providers._session import identity_for, parse_set_cookie
from providers._transport import AsyncTransport, Request

MAX_REDIRECTS = 10
MAX_PAGE_BYTES = 16 * 1024 * 1024  # a page bigger than this is cut off (and says so in the error)
_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class FetchError(Exception):
    """The page cannot be returned: too large, or too many redirects."""


@dataclass(slots=True)
class Fetched:
    """What the fetch saw at the end of its redirects."""

    url: str
    status: int
    headers: dict[str, str]
    text: str
    cookies: list[Cookie] = field(default_factory=list)
    content: bytes = field(default=b"", repr=False)

    @property
    def challenged(self) -> bool:
        """True when the site answered with a challenge (or a block) instead of the page."""
        if self.headers.get("cf-mitigated", "").lower() == "challenge":
            return True
        verdict = classify(PageState(url=self.url, status=self.status, html=self.text[:65536]))
        return verdict in ("challenge", "interactive")


async def fetch(
    transport: AsyncTransport,
    *,
    url: str,
    record: SessionRecord | None,
    method: str = "GET",
    body: bytes | None = None,
    cookies: Mapping[str, str] | None = None,
    proxy: str | None = None,
    deadline: float,
) -> Fetched:
    """Fetch ``url`` with ``record``'s identity (plus ``cookies``), following redirects.

    Raises:
        providers.ProviderError subclasses: the site could not be reached, or the deadline passed.
        FetchError: the page exceeds ``MAX_PAGE_BYTES``, or redirects more than ``MAX_REDIRECTS`` times.
    """
    identity = identity_for(record, cookies=cookies, proxy=proxy)
    jar: dict[str, Cookie] = {c.name: c for c in (record.cookies if record is not None else [])}
    for name, value in (cookies or {}).items():
        jar[name] = Cookie(name, value, urlsplit(url).hostname or "")
    loop = asyncio.get_running_loop()
    idle = max(1.0, deadline - loop.time())
    for _ in range(MAX_REDIRECTS + 1):
        lines = [("User-Agent", identity.user_agent), *identity.headers, ("Accept", _ACCEPT)]
        lines.append(("Accept-Language", "en-US,en;q=0.9"))
        if body is not None:
            lines.append(("Content-Type", "application/x-www-form-urlencoded"))
        if jar:
            lines.append(("Cookie", "; ".join(f"{c.name}={c.value}" for c in jar.values())))
        request = Request(
            method,
            url,
            headers=tuple(lines),
            body=body,
            proxy=identity.proxy,
            impersonate=identity.impersonate,
            idle_timeout=idle,
            deadline=deadline,
        )
        response = await transport.handle_request(request)
        try:
            for raw in response.set_cookies:
                cookie, deleted = parse_set_cookie(raw)
                if not cookie.name:
                    continue
                if deleted:
                    jar.pop(cookie.name, None)
                else:
                    jar[cookie.name] = cookie if cookie.domain else _on_host(cookie, url)
            location = response.header("location")
            if response.status in _REDIRECTS and location:
                url = urljoin(url, location)
                if response.status == 303 or (response.status in (301, 302) and method == "POST"):
                    method, body = "GET", None  # as browsers do
                continue
            data = await _read_bounded(response)
            headers = dict(response.headers)
            text = _decode(data, headers)
            return Fetched(
                url=url, status=response.status, headers=headers, text=text, cookies=list(jar.values()), content=data
            )
        finally:
            await response.aclose()
    raise FetchError(f"{url}: more than {MAX_REDIRECTS} redirects")


async def _read_bounded(response: object) -> bytes:
    chunks: list[bytes] = []
    size = 0
    receive = response.receive  # type: ignore[attr-defined]
    while data := await receive():
        size += len(data)
        if size > MAX_PAGE_BYTES:
            raise FetchError(f"the page is larger than {MAX_PAGE_BYTES // (1024 * 1024)} MiB")
        chunks.append(data)
    return b"".join(chunks)


def _decode(data: bytes, headers: Mapping[str, str]) -> str:
    content_type = headers.get("content-type", "")
    charset = "utf-8"
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "charset" and value:
            charset = value.strip('"')
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def _on_host(cookie: Cookie, url: str) -> Cookie:
    from dataclasses import replace

    return replace(cookie, domain=urlsplit(url).hostname or "")
