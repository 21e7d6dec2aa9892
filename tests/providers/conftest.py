"""Fixtures for the provider tests: an isolated cache, stamina's test mode, and a browserless clearance."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator

import pytest
import stamina

from cache import AuthCache, Cookie, SessionRecord
from providers import close_transport
from tests.emulator._challenge import solve

USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0.0.0 Safari/537.36"
CLIENT_HINTS = {
    "sec-ch-ua": '"Chromium";v="142", "Google Chrome";v="142", "Not_A Brand";v="99"',
    "sec-ch-ua-mobile": "?0",
    "sec-ch-ua-platform": '"Linux"',
}
MESSAGES = [{"role": "user", "content": "hi there"}]


@pytest.fixture(autouse=True)
def stamina_testing() -> Iterator[None]:
    """Retries without waits, but with all five attempts, so fault tests run fast."""
    with stamina.set_testing(True, attempts=5):
        yield


@pytest.fixture(autouse=True)
async def default_clients_cleanup() -> AsyncIterator[None]:
    """Close the loop's default clients (the classmethods' transport, their cookie merges) before the loop ends."""
    yield
    await close_transport()


@pytest.fixture
def cache() -> AuthCache:
    """The isolated cache that `isolated_env` points HARVEST_CACHE at."""
    return AuthCache.open()


def clearance(base_url: str, user_agent: str = USER_AGENT) -> str:
    """Answer the emulator's challenge without a browser and return the `cf_clearance` bound to `user_agent`."""
    request = urllib.request.Request(base_url + "/", headers={"User-Agent": user_agent})
    try:
        urllib.request.urlopen(request, timeout=5).read()
        raise AssertionError("expected a challenge")
    except urllib.error.HTTPError as exc:
        page = exc.read().decode()
    nonce = re.search(r'"cNounce": "([0-9a-f]+)"', page)
    assert nonce, "no nonce in the challenge page"
    answer = json.dumps({"nonce": nonce.group(1), "answer": solve(nonce.group(1))}).encode()
    post = urllib.request.Request(
        base_url + "/cdn-cgi/challenge-platform/answer",
        data=answer,
        headers={"User-Agent": user_agent, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(post, timeout=5) as response:
        cookie = response.headers["Set-Cookie"]
    match = re.search(r"cf_clearance=([^;]+)", cookie)
    assert match
    return match.group(1)


def make_record(provider: str, base_url: str | None = None, **changes: object) -> SessionRecord:
    """A record like a harvest makes: a clearance (if `base_url` is given), the UA and client hints."""
    cookies = [Cookie("cf_clearance", clearance(base_url), "127.0.0.1")] if base_url else []
    record = SessionRecord(
        provider=provider,
        cookies=cookies,
        user_agent=USER_AGENT,
        headers=dict(CLIENT_HINTS),
        impersonate="chrome",
        browser="Chromium/142",
        origin=base_url,
    )
    return record.replace(**changes) if changes else record
