"""Pure exporters: a record in the shapes other tools read (JSON, cookies.txt, shell env, curl, header)."""

from __future__ import annotations

import re
import shlex
from datetime import datetime

import orjson

from ._record import SessionRecord

FORMATS = ("json", "cookies.txt", "env", "curl", "header")


class ExportError(ValueError):
    """A record holds a value its export format cannot carry safely (a control character in a cookie)."""


def to_json(record: SessionRecord) -> str:
    """The record's contract JSON, pretty-printed."""
    return orjson.dumps(record.to_json(), option=orjson.OPT_INDENT_2).decode()


def cookie_header(record: SessionRecord) -> str:
    """The value of a ``Cookie:`` header."""
    return "; ".join(f"{c.name}={c.value}" for c in record.cookies)


def to_cookies_txt(record: SessionRecord) -> str:
    """Netscape cookies.txt, as curl (``-b``) and yt-dlp (``--cookies``) read it."""
    lines = ["# Netscape HTTP Cookie File", f"# harvest: {record.provider}", ""]
    for c in record.cookies:
        domain = c.domain or _host(record.origin)
        # curl reads the #HttpOnly_ prefix as a flag, not as a comment.
        prefix = "#HttpOnly_" if c.http_only else ""
        subdomains = "TRUE" if domain.startswith(".") else "FALSE"
        expires = int(c.expires) if c.expires else 0
        secure = "TRUE" if c.secure else "FALSE"
        lines.append(f"{prefix}{domain}\t{subdomains}\t{c.path or '/'}\t{secure}\t{expires}\t{c.name}\t{c.value}")
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


def to_curl(record: SessionRecord) -> str:
    """``-H``/``-b`` arguments to paste after ``curl``."""
    args = []
    for name, value in request_headers(record).items():
        args += ["-H", shlex.quote(f"{name}: {value}")]
    if record.cookies:
        args += ["-b", shlex.quote(cookie_header(record))]
    return " ".join(args) + "\n"


def to_header(record: SessionRecord) -> str:
    """One ``Cookie:`` line."""
    return f"Cookie: {cookie_header(record)}\n"


def render(record: SessionRecord, fmt: str) -> str:
    """Render a record in one of ``FORMATS`` (``RecordError`` if it breaks a rule: nothing is half-printed)."""
    record.validate()
    if fmt == "json":
        return to_json(record) + "\n"
    if fmt == "cookies.txt":
        return to_cookies_txt(record)
    if fmt == "env":
        return to_env(record)
    if fmt == "curl":
        return to_curl(record)
    if fmt == "header":
        return to_header(record)
    raise ValueError(f"unknown format {fmt!r}")


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
