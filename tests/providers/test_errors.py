"""The error tree, the single curl_cffi translation point, and the pure error classification."""

from __future__ import annotations

import pytest
from curl_cffi import CurlError
from curl_cffi.const import CurlECode
from curl_cffi.requests.exceptions import CODE2ERROR

from providers import _exceptions as errors
from providers._client import _backoff
from providers._decode import error_for_status, is_challenge, parse_retry_after
from providers._transport._errors import CONNECT_ERRORS, MISUSE_CODES, translate_curl_error


def test_every_error_derives_from_provider_error() -> None:
    """Every public error class is a ProviderError, so one `except` catches them all."""
    classes = [obj for obj in vars(errors).values() if isinstance(obj, type) and issubclass(obj, Exception)]
    assert len(classes) >= 10
    assert all(issubclass(cls, errors.ProviderError) for cls in classes)


@pytest.mark.parametrize("code", sorted(int(c) for c in CODE2ERROR))
def test_every_curl_error_is_mapped(code: int) -> None:
    """Every curl error code curl_cffi knows maps to one of our classes (or to ValueError for misuse)."""
    assert code in CONNECT_ERRORS or code in MISUSE_CODES
    error = translate_curl_error(CurlError("boom", code), url="http://x", in_body=False)
    assert isinstance(error, errors.TransportError | ValueError)


def test_curl_error_in_body_is_a_stream_error() -> None:
    """A transfer that breaks after the status arrived is a truncated stream, not a connection error."""
    error = translate_curl_error(CurlError("cut", CurlECode.PARTIAL_FILE), url="http://x", in_body=True)
    assert isinstance(error, errors.StreamError)
    refused = translate_curl_error(CurlError("no", CurlECode.COULDNT_CONNECT), url="http://x", in_body=False)
    assert isinstance(refused, errors.ConnectError)
    timeout = translate_curl_error(CurlError("slow", CurlECode.OPERATION_TIMEDOUT), url="http://x", in_body=True)
    assert isinstance(timeout, errors.ProviderTimeout)


def test_challenge_is_recognised() -> None:
    """A 403 with cf-mitigated or a "Just a moment..." page is a challenge; a JSON 403 is not."""
    assert is_challenge(403, {"cf-mitigated": "challenge"}, b"")
    assert is_challenge(403, {}, b"<title>Just a moment...</title>")
    assert not is_challenge(403, {}, b'{"error": "forbidden"}')
    error = error_for_status(403, {"cf-mitigated": "challenge"}, b"<html>", provider="p", url="u")
    assert isinstance(error, errors.CloudflareError)
    assert error.status == 403


def test_status_errors_carry_status_and_message() -> None:
    """A JSON error body becomes a ResponseStatusError with the API's message and status."""
    error = error_for_status(503, {}, b'{"error":{"message":"overloaded"}}', provider="p", url="u")
    assert type(error) is errors.ResponseStatusError
    assert (error.status, error.body) == (503, "overloaded")


def test_rate_limit_reads_retry_after() -> None:
    """429 becomes RateLimitError with Retry-After in seconds, which the backoff hook returns as the wait."""
    error = error_for_status(429, {"retry-after": "2.5"}, b"{}", provider="p", url="u")
    assert isinstance(error, errors.RateLimitError)
    assert error.retry_after == 2.5
    assert _backoff(error) == 2.5
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None


def test_backoff_policy() -> None:
    """5xx, 429 and connection errors are retried; 4xx, challenges, stream errors and the deadline are not."""
    status = errors.ResponseStatusError
    assert _backoff(status("x", status=502))
    assert not _backoff(status("x", status=400))
    assert not _backoff(errors.CloudflareError("x", status=403))
    assert _backoff(errors.ConnectError("x"))
    assert not _backoff(errors.StreamError("x"))
    assert _backoff(errors.ProviderTimeout("x"))
    assert not _backoff(errors.ProviderTimeout("x", deadline_passed=True))


def test_model_not_found_lists_closest() -> None:
    """ModelNotFoundError names the closest known models."""
    error = errors.ModelNotFoundError("llama-3.1-8", ["llama-3.1-8b", "gpt-4", "llama-3.1-70b"])
    assert error.closest[0] == "llama-3.1-8b"
    assert "llama-3.1-8b" in str(error)
