"""The clients send through the record's proxy, credentials included, and never show the password."""

from __future__ import annotations

from typing import Any

import pytest

from cache import AuthCache
from providers import Cerebras, Cloudflare, FinishReason, FreeNetfly, ProviderError
from providers._session import identity_for
from providers._transport import Request
from tests.emulator._proxy import PASSWORD, ProxyThread
from tests.emulator._server import EmulatorThread

from .conftest import MESSAGES, make_record


async def collect(gen: Any) -> list[Any]:
    return [item async for item in gen]


@pytest.fixture(autouse=True)
def no_proxy_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """$no_proxy names the emulator's host: libcurl would send it directly unless the client overrides that,
    and a session harvested through a proxy must be replayed through it, whatever the environment says."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


async def test_call_goes_through_the_records_authenticating_proxy(
    emulator: EmulatorThread, auth_proxy: ProxyThread, cache: AuthCache
) -> None:
    """A record harvested behind a proxy with credentials is replayed through it: the proxy authenticated it."""
    cache.put(make_record("freenetfly", emulator.url, proxy=auth_proxy.auth_url))
    items = await collect(FreeNetfly.create_async_generator("gpt-4", MESSAGES, base_url=emulator.url))
    assert "".join(i for i in items if isinstance(i, str)).startswith("Hello from the freenetfly emulator")
    assert FinishReason("stop") in items
    stats = auth_proxy.stats
    assert stats["authenticated"] >= 1 and stats["refused"] == 0  # curl sends Basic credentials up front
    assert stats["paths"]["/api/openai/v1/chat/completions"] == 1
    assert emulator.stats["api_requests"]["/api/openai/v1/chat/completions"] == 1


async def test_session_read_and_call_both_use_the_proxy(
    emulator: EmulatorThread, auth_proxy: ProxyThread, cache: AuthCache
) -> None:
    """Cerebras' session read (for its key) and its streamed answer both pass the authenticating proxy."""
    cache.put(make_record("cerebras", emulator.url, proxy=auth_proxy.auth_url))
    items = await collect(Cerebras.create_async_generator("llama3.1-8b", MESSAGES, base_url=emulator.url))
    assert FinishReason("stop") in items
    paths = auth_proxy.stats["paths"]
    assert paths["/api/auth/session"] == 1 and paths["/v1/chat/completions"] == 1


async def test_explicit_proxy_wins_over_the_record(emulator: EmulatorThread, proxy_factory: Any) -> None:
    """`proxy=` on the call is used (credentials in its URL) even without a record."""
    emulator.configure(require_clearance=False)
    proxy = proxy_factory(username="other", password="an0ther-pa55")
    items = await collect(
        FreeNetfly.create_async_generator("gpt-4", MESSAGES, base_url=emulator.url, proxy=proxy.auth_url)
    )
    assert FinishReason("stop") in items
    assert proxy.stats["authenticated"] == 1


async def test_wrong_proxy_password_is_an_error_without_the_password(
    emulator: EmulatorThread, auth_proxy: ProxyThread, cache: AuthCache
) -> None:
    """A proxy that refuses the record's credentials fails the call; the error text never holds the password."""
    wrong = "wr0ng-pr0xy-pw"
    cache.put(make_record("freenetfly", emulator.url, proxy=auth_proxy.url_for("proxy-user", wrong)))
    with pytest.raises(ProviderError) as info:
        await collect(FreeNetfly.create_async_generator("gpt-4", MESSAGES, base_url=emulator.url))
    assert auth_proxy.stats["refused_with_credentials"] >= 1
    assert emulator.stats["api_requests"].get("/api/openai/v1/chat/completions") is None
    text = f"{info.value}\n{info.value!r}"
    assert wrong not in text and PASSWORD not in text
    assert "proxy refused the credentials (407)" in str(info.value)


def test_reprs_mask_the_proxy_password() -> None:
    """A record's, an identity's and a transport request's repr never show the proxy password."""
    url = f"http://proxy-user:{PASSWORD}@127.0.0.1:3128"
    record = make_record("freenetfly", proxy=url)
    for obj in (record, identity_for(record), Request("GET", "http://127.0.0.1/", proxy=url)):
        assert PASSWORD not in repr(obj)


async def test_agent_socket_goes_through_the_records_authenticating_proxy(
    emulator: EmulatorThread, auth_proxy: ProxyThread, cache: AuthCache
) -> None:
    """Cloudflare's WebSocket upgrade passes the record's authenticating proxy too, whatever $no_proxy says."""
    cache.put(make_record("cloudflare", emulator.url, proxy=auth_proxy.auth_url))
    items = await collect(Cloudflare.create_async_generator("", MESSAGES, base_url=emulator.url, protocol="agent"))
    assert "".join(i for i in items if isinstance(i, str)).startswith("Hello from the cloudflare emulator")
    stats = auth_proxy.stats
    assert stats["authenticated"] >= 1 and stats["refused"] == 0
    assert emulator.stats["api_requests"]["/agents/playground"] == 1
