"""Redaction and the key=value log format."""

from __future__ import annotations

import logging

import pytest

from harvester.daemon import KeyValueFormatter, SecretRegistry, redact


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer sk-abcdef1234567890", "sk-abcdef1234567890"),
        ("headers={'authorization': 'Basic dXNlcjpwYXNzd29yZA=='}", "dXNlcjpwYXNzd29yZA=="),
        ("Cookie: cf_clearance=AbC123xyz; __cf_bm=QQQ999", "AbC123xyz"),
        ("Cookie: cf_clearance=AbC123xyz; __cf_bm=QQQ999", "QQQ999"),
        ("set-cookie: session=s3cr3tvalue; Path=/", "s3cr3tvalue"),
        ('{"api_key": "k-live-7f7f7f7f"}', "k-live-7f7f7f7f"),
        ("demoApiKey=abcdef0123456789 user=x", "abcdef0123456789"),
        ("proxy http://bob:hunter22@proxy.example:3128", "hunter22"),
        ("cf_clearance=ZZtop.1234-abc", "ZZtop.1234-abc"),
        ("using key sk-proj-0123456789abcdef", "0123456789abcdef"),
    ],
)
def test_patterns_redact_secret_shapes(text: str, secret: str) -> None:
    """Header values, key=value secrets, URL passwords and API-key shapes are replaced by ***."""
    out = redact(text)
    assert secret not in out
    assert "***" in out


def test_known_secrets_are_redacted_by_value_anywhere() -> None:
    """A value registered for a provider is redacted wherever it appears, with no keyword near it."""
    secrets = SecretRegistry()
    secrets.set("cerebras", ["opaque-token-value-42", None, "1"])
    assert redact("the page said opaque-token-value-42 twice: opaque-token-value-42", secrets) == (
        "the page said *** twice: ***"
    )
    assert redact("count=1", secrets) == "count=1"  # too short to be a secret, too common to redact


def test_registry_replaces_and_forgets_per_provider() -> None:
    """A provider's secrets are replaced on each harvest and dropped when it is removed (no growth)."""
    secrets = SecretRegistry()
    secrets.set("a", ["first-secret-value"])
    secrets.set("a", ["second-secret-value"])
    assert redact("first-secret-value", secrets) == "first-secret-value"
    assert redact("second-secret-value", secrets) == "***"
    secrets.discard("a")
    assert redact("second-secret-value", secrets) == "second-secret-value"


def test_ordinary_lines_pass_untouched() -> None:
    """Event lines with times, counts and URLs keep every value."""
    line = "event=harvest.ok provider=cerebras seconds=1.234 cookies=3 next_run=2025-01-01T00:00:00Z"
    assert redact(line) == line
    assert redact("url=http://127.0.0.1:8765/chat") == "url=http://127.0.0.1:8765/chat"


def test_formatter_writes_one_redacted_line_per_event() -> None:
    """An event with fields and a traceback becomes one key=value line, with secrets redacted."""
    secrets = SecretRegistry()
    secrets.set("p", ["leaky-cookie-value"])
    formatter = KeyValueFormatter(secrets)
    try:
        raise RuntimeError("boom with leaky-cookie-value\nsecond line")
    except RuntimeError as exc:
        record = logging.LogRecord("harvester.daemon", logging.WARNING, __file__, 1, "x", None, (type(exc), exc, None))
    record.event = "harvest.failed"
    record.fields = {"provider": "p", "error": "has space", "skip": None}
    line = formatter.format(record)
    assert "\n" not in line
    assert 'level=warning event=harvest.failed provider=p error="has space"' in line
    assert "skip=" not in line
    assert "leaky-cookie-value" not in line and "***" in line


def test_library_messages_are_formatted_and_redacted() -> None:
    """A plain library log call is one line with its logger name and a redacted message."""
    formatter = KeyValueFormatter(SecretRegistry())
    record = logging.LogRecord("nodriver.core", logging.INFO, __file__, 1, "send %s", ("Cookie: a=b",), None)
    line = formatter.format(record)
    assert "logger=nodriver.core" in line and 'msg="send Cookie: ***"' in line
