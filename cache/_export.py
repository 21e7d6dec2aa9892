"""Pure exporters: a record in the shapes other tools read.

JSON (the record itself), Netscape cookies.txt, shell ``export`` lines, a curl config (``curl -K``), a
``Cookie:`` header, Playwright's ``storage_state``, the EditThisCookie/Cookie-Editor cookie list, and a HAR 1.2
log. Every format but JSON refuses a record with a control character in a field it writes (``ExportError``).
"""

from __future__ import annotations

import re
import shlex
from datetime import UTC, datetime

import orjson

from ._record import Cookie, SessionRecord

FORMATS = ("json", "cookies.txt", "env", "curl", "header", "storage-state", "cookies.json", "har")

#: The file name ending per format, for ``harvest cache export`` (``<name>.<ending>``). Tools that scan a
#: directory by suffix (g4f reads ``*.json`` and ``*.har``) find the JSON formats by it.
EXTENSIONS = {
    "json": "json",
    "cookies.txt": "cookies.txt",
    "env": "env",
    "curl": "curlrc",
    "header": "header.txt",
    "storage-state": "storage-state.json",
    "cookies.json": "cookies.json",
    "har": "har",
}


class ExportError(ValueError):
    """A record holds a value its export format cannot carry safely (a control character in a cookie)."""


# CR and LF would start a new line (a cookie or header of the attacker's choosing); NUL and the other C0
# controls, and DEL, are invalid in headers and cookies anyway. cache/_record.py refuses them on the way in;
# the exporters check again, so a record from anywhere can never inject a line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check(record: SessionRecord) -> None:
    """Raise ``ExportError`` if any field an export writes holds a control character."""
    fields: list[tuple[str, str | None]] = [("user_agent", record.user_agent), ("api_key", record.api_key)]
    fields += [("proxy", record.proxy), ("origin", record.origin), ("impersonate", record.impersonate)]
    for i, c in enumerate(record.cookies):
        for key in ("name", "value", "domain", "path"):
            fields.append((f"cookies[{i}].{key}", str(getattr(c, key))))
    for header, header_value in record.headers.items():
        fields += [(f"headers name {header[:40]!r}", header), (f"headers[{header[:40]!r}]", header_value)]
    for where, text in fields:
        if text and _CONTROL.search(text):
            raise ExportError(f"{record.provider}: {where} holds a control character; refusing to export it")


def to_json(record: SessionRecord) -> str:
    """The record's contract JSON, pretty-printed."""
    return orjson.dumps(record.to_json(), option=orjson.OPT_INDENT_2).decode()


def cookie_header(record: SessionRecord) -> str:
    """The value of a ``Cookie:`` header."""
    return "; ".join(f"{c.name}={c.value}" for c in record.cookies)


def to_cookies_txt(record: SessionRecord) -> str:
    """Netscape cookies.txt, as curl (``-b``), wget (``--load-cookies``), yt-dlp and ``MozillaCookieJar`` read it."""
    lines = ["# Netscape HTTP Cookie File", f"# harvest: {record.provider}", ""]
    for c in record.cookies:
        domain = _cookie_domain(record, c)
        # No "#HttpOnly_" prefix: curl and yt-dlp read it as a flag, but wget (1.21) reads it as a comment and
        # would drop cf_clearance, and the flag means nothing to a tool that is not a browser. The formats for
        # browsers (storage-state, cookies.json) keep it.
        subdomains = "TRUE" if domain.startswith(".") else "FALSE"
        expires = int(c.expires) if c.expires else 0
        secure = "TRUE" if c.secure else "FALSE"
        lines.append(f"{domain}\t{subdomains}\t{c.path or '/'}\t{secure}\t{expires}\t{c.name}\t{c.value}")
    return "\n".join(lines) + "\n"


def to_env(record: SessionRecord) -> str:
    """``export`` lines a shell can ``eval``."""
    prefix = "HARVEST_" + re.sub(r"[^A-Z0-9]", "_", record.provider.upper())
    values = {
        "COOKIE": cookie_header(record),
        "USER_AGENT": record.user_agent,
        "API_KEY": record.api_key or "",
        "ORIGIN": record.origin or "",
        "PROXY": record.proxy or "",
        "IMPERSONATE": record.impersonate or "",
    }
    return "".join(f"export {prefix}_{name}={shlex.quote(value)}\n" for name, value in values.items())


def request_headers(record: SessionRecord) -> dict[str, str]:
    """Every header a client should send to reuse the session, the cookie excluded."""
    headers = {"User-Agent": record.user_agent} if record.user_agent else {}
    headers.update(record.headers)
    if record.api_key:
        headers["Authorization"] = f"Bearer {record.api_key}"
    return headers


def _curl_quote(value: str) -> str:
    # curl's config syntax (docs/cmdline-opts/config.md): inside double quotes, backslash escapes \\ and \".
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_curl(record: SessionRecord) -> str:
    """A curl config file (``curl -K FILE``): the user agent, the other headers, the cookies and the proxy."""
    lines = [f"# harvest: {record.provider} session for curl -K (secrets below: keep this file private)"]
    for name, value in request_headers(record).items():
        if name.lower() == "user-agent":
            lines.append(f"user-agent = {_curl_quote(value)}")
        else:
            lines.append(f"header = {_curl_quote(f'{name}: {value}')}")
    if record.cookies:
        lines.append(f"cookie = {_curl_quote(cookie_header(record))}")
    if record.proxy:  # a clearance is bound to the address that earned it
        lines.append(f"proxy = {_curl_quote(record.proxy)}")
    return "\n".join(lines) + "\n"


def to_header(record: SessionRecord) -> str:
    """One ``Cookie:`` line."""
    return f"Cookie: {cookie_header(record)}\n"


def to_storage_state(record: SessionRecord) -> str:
    """Playwright's ``storage_state`` JSON, for ``browser.new_context(storage_state=..., user_agent=...)``."""
    cookies = [
        {
            "name": c.name,
            "value": c.value,
            "domain": _cookie_domain(record, c),
            "path": c.path or "/",
            "expires": c.expires if c.expires else -1,  # -1: a session cookie
            "httpOnly": c.http_only,
            "secure": c.secure,
            # Chromium treats a cookie without SameSite as Lax, and Playwright needs one of the three.
            "sameSite": c.same_site or "Lax",
        }
        for c in record.cookies
    ]
    return orjson.dumps({"cookies": cookies, "origins": []}, option=orjson.OPT_INDENT_2).decode() + "\n"


_EXTENSION_SAME_SITE = {"Strict": "strict", "Lax": "lax", "None": "no_restriction", None: "unspecified"}


def to_cookies_json(record: SessionRecord) -> str:
    """The cookie list EditThisCookie and Cookie-Editor export and import (``chrome.cookies.Cookie`` fields)."""
    cookies = []
    for number, c in enumerate(record.cookies, 1):
        domain = _cookie_domain(record, c)
        entry: dict[str, object] = {
            "domain": domain,
            "hostOnly": not domain.startswith("."),
            "httpOnly": c.http_only,
            "name": c.name,
            "path": c.path or "/",
            "sameSite": _EXTENSION_SAME_SITE[c.same_site],
            "secure": c.secure,
            "session": not c.expires,
            "storeId": "0",
            "value": c.value,
            "id": number,
        }
        if c.expires:
            entry["expirationDate"] = c.expires
        cookies.append(entry)
    return orjson.dumps(cookies, option=orjson.OPT_INDENT_2).decode() + "\n"


def to_har(record: SessionRecord) -> str:
    """A minimal HAR 1.2 log: one GET of the record's origin carrying its user agent, headers and cookies."""
    origin = record.origin or _origin_from_cookies(record)
    # Host first, as a browser's HAR has it: g4f files a HAR entry's cookies and headers under its Host header.
    headers = [{"name": "Host", "value": origin.split("://", 1)[-1].split("/", 1)[0]}]
    headers += [{"name": name, "value": value} for name, value in request_headers(record).items()]
    if record.cookies:
        headers.append({"name": "Cookie", "value": cookie_header(record)})
    har_cookies = []
    for c in record.cookies:
        cookie: dict[str, object] = {
            "name": c.name,
            "value": c.value,
            "path": c.path or "/",
            "domain": _cookie_domain(record, c),
            "httpOnly": c.http_only,
            "secure": c.secure,
        }
        if c.expires:
            cookie["expires"] = datetime.fromtimestamp(c.expires, UTC).isoformat().replace("+00:00", "Z")
        har_cookies.append(cookie)
    entry = {
        "startedDateTime": record.harvested_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "time": 0,
        "request": {
            "method": "GET",
            "url": origin.rstrip("/") + "/",
            "httpVersion": "HTTP/1.1",
            "cookies": har_cookies,
            "headers": headers,
            "queryString": [],
            "headersSize": -1,
            "bodySize": -1,
        },
        "response": {
            "status": 200,
            "statusText": "OK",
            "httpVersion": "HTTP/1.1",
            "cookies": [],
            "headers": [],
            "content": {"size": 0, "mimeType": "text/html"},
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": -1,
        },
        "cache": {},
        "timings": {"send": 0, "wait": 0, "receive": 0},
        "comment": f"harvest record {record.provider}",
    }
    log = {"log": {"version": "1.2", "creator": {"name": "harvest", "version": _version()}, "entries": [entry]}}
    return orjson.dumps(log, option=orjson.OPT_INDENT_2).decode() + "\n"


_RENDERERS = {
    "cookies.txt": to_cookies_txt,
    "env": to_env,
    "curl": to_curl,
    "header": to_header,
    "storage-state": to_storage_state,
    "cookies.json": to_cookies_json,
    "har": to_har,
}


def render(record: SessionRecord, fmt: str) -> str:
    """Render a record in one of ``FORMATS``; nothing is half-printed.

    Raises:
        RecordError: the record breaks a rule of cache/_record.py (a name, a time, a control character).
        ExportError: a field the format writes holds a control character (checked again here, whatever made
            the record; every format but ``json``, which escapes them).
        ValueError: an unknown format.
    """
    record.validate()
    if fmt == "json":
        return to_json(record) + "\n"
    renderer = _RENDERERS.get(fmt)
    if renderer is None:
        raise ValueError(f"unknown format {fmt!r}")
    _check(record)
    return renderer(record)


def humanize_delta(seconds: float) -> str:
    """'3 h 5 min', '42 s', 'expired 2 min ago'."""
    if seconds < 0:
        return f"expired {humanize_delta(-seconds)} ago"
    seconds = int(seconds)
    if seconds < 90:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d {hours % 24} h"


def expires_in(record: SessionRecord, now: datetime) -> str:
    """How long until the record expires, for tables."""
    if record.expires_at is None:
        return "never"
    return humanize_delta((record.expires_at - now).total_seconds())


def _host(origin: str | None) -> str:
    if not origin:
        return ""
    return origin.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]


def _cookie_domain(record: SessionRecord, cookie: Cookie) -> str:
    return cookie.domain or _host(record.origin)


def _origin_from_cookies(record: SessionRecord) -> str:
    for c in record.cookies:
        if c.domain:
            return f"{'https' if c.secure else 'http'}://{c.domain.lstrip('.')}"
    raise ExportError(f"{record.provider}: the record has no origin and no cookie domain to make a HAR request of")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("harvest")
    except PackageNotFoundError:
        return "0"
