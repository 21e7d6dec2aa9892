"""One ``key=value`` line per event on stderr, with every secret redacted before it is written.

The daemon never puts a record's secrets in a log call in the first place; redaction is the second line of
defence, for messages from libraries and for exception text we do not control. It runs in the formatter,
on the finished line (message, fields and traceback), so nothing can slip around it:

* ``Authorization``/``Cookie``/``Set-Cookie`` header values, ``Bearer`` tokens, ``api_key=``-style pairs,
  passwords in URLs and ``sk-...`` style keys, by pattern;
* the exact cookie values and API keys of the records the daemon holds, by value (``SecretRegistry``).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

LOGGER_NAME = "harvester.daemon"
REDACTED = "***"

# Values shorter than this are not redacted by value: "1" or "yes" would shred every line.
_MIN_SECRET_LEN = 6

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Header lines and header-ish pairs: everything after the name up to the end of the field.
    (re.compile(r"(?i)\b((?:proxy-)?authorization|set-cookie|cookie)(\"?\s*[:=]\s*\"?)[^\"\n]*"), r"\1\2" + REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}"), r"\1 " + REDACTED),
    (
        re.compile(
            r"(?i)\b([\w-]*(?:api[_-]?key|token|secret|passw(?:or)?d|clearance|session[_-]?id|__cf_bm|_cfuvid)"
            r"[\w-]*)(\"?\s*[:=]\s*\"?)[^\s\"',;&]+"
        ),
        r"\1\2" + REDACTED,
    ),
    (re.compile(r"(://[^/\s:@]+):[^@\s/]+@"), r"\1:" + REDACTED + "@"),
    (re.compile(r"\b(sk|pk|rk|key)-[A-Za-z0-9_-]{8,}"), r"\1-" + REDACTED),
)


class SecretRegistry:
    """The exact secret values currently held by the daemon, by provider, so they are redacted by value.

    Memory stays flat: each provider's set is replaced, never appended to, on every harvest.
    """

    def __init__(self) -> None:
        # Protects ``_by_owner``: log lines are formatted on whichever thread logs (asyncio.to_thread work).
        self._lock = threading.Lock()
        self._by_owner: dict[str, frozenset[str]] = {}
        self._all: tuple[str, ...] = ()

    def set(self, owner: str, values: Iterable[str | None]) -> None:
        """Replace the secrets known for ``owner`` (a provider name)."""
        kept = frozenset(v for v in values if v and len(v) >= _MIN_SECRET_LEN)
        with self._lock:
            self._by_owner[owner] = kept
            self._rebuild()

    def discard(self, owner: str) -> None:
        """Forget ``owner``'s secrets (its provider was removed from the config)."""
        with self._lock:
            self._by_owner.pop(owner, None)
            self._rebuild()

    def _rebuild(self) -> None:
        # Longest first, so a secret that contains another is replaced whole.
        self._all = tuple(sorted(set().union(*self._by_owner.values()), key=len, reverse=True))

    def redact(self, text: str) -> str:
        """Replace every known secret value in ``text``."""
        for value in self._all:
            if value in text:
                text = text.replace(value, REDACTED)
        return text


def redact(text: str, secrets: SecretRegistry | None = None) -> str:
    """Return ``text`` with secret-looking values and every known secret replaced by ``***``."""
    if secrets is not None:
        text = secrets.redact(text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _quote(value: Any) -> str:
    if isinstance(value, datetime):
        text = value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    elif isinstance(value, float):
        text = f"{value:.3f}"
    else:
        text = str(value)
    if text and not any(c in text for c in ' "=\n\t\\'):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{escaped}"'


class KeyValueFormatter(logging.Formatter):
    """Format a record as one ``ts=… level=… event=… key=value`` line, then redact it."""

    def __init__(self, secrets: SecretRegistry | None = None) -> None:
        super().__init__()
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        fields: Mapping[str, Any] = getattr(record, "fields", None) or {}
        parts = [
            f"ts={_quote(datetime.fromtimestamp(record.created, UTC))}",
            f"level={record.levelname.lower()}",
        ]
        event = getattr(record, "event", None)
        if event is not None:
            parts.append(f"event={_quote(event)}")
        else:
            parts.append(f"logger={_quote(record.name)}")
            parts.append(f"msg={_quote(record.getMessage())}")
        parts.extend(f"{key}={_quote(value)}" for key, value in fields.items() if value is not None)
        if record.exc_info:
            parts.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return redact(" ".join(parts), self.secrets)


class RedactingFilter(logging.Filter):
    """Redact the message of records that go to handlers with a formatter we do not own.

    The daemon's own handler redacts in ``KeyValueFormatter``; this filter is for anyone who attaches the
    daemon's logger to another handler.
    """

    def __init__(self, secrets: SecretRegistry | None = None) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage(), self.secrets)
        record.args = None
        return True


def log_event(logger: logging.Logger, level: int, event: str, /, **fields: Any) -> None:
    """Log one event with its fields (values must never be secrets; they are redacted regardless)."""
    logger.log(level, event, extra={"event": event, "fields": fields})


def configure_logging(secrets: SecretRegistry, *, stream: TextIO | None = None, verbose: bool = False) -> None:
    """Send every log record to ``stream`` (stderr) as redacted ``key=value`` lines.

    The handler sits on the root logger, so browser-driver and aiohttp messages go through the same
    redaction. Chatty libraries are kept at WARNING unless ``verbose``.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(KeyValueFormatter(secrets))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("apscheduler", "aiohttp.access", "asyncio", "nodriver", "websockets", "uc", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
