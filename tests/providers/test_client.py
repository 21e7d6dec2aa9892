"""The Client's own logic over a MockTransport and a fake Refresher: no network, no browser."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import orjson
import pytest

from cache import AuthCache, Cookie, SessionRecord, utcnow
from providers import (
    AsyncTransport,
    Cerebras,
    Client,
    FinishReason,
    FreeNetfly,
    MissingAuthError,
    MockResponse,
    MockTransport,
    Refresher,
    Request,
    StreamError,
    Usage,
    close_transport,
)

from .conftest import MESSAGES

API = "http://api.test"


def sse(*texts: str) -> list[bytes]:
    """An OpenAI stream: one delta event per text, then a finish with usage, then [DONE]."""
    events = [
        b"data: "
        + orjson.dumps({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
        + b"\n\n"
        for text in texts
    ]
    events.append(
        b"data: "
        + orjson.dumps(
            {
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": len(texts)},
            }
        )
        + b"\n\n"
    )
    events.append(b"data: [DONE]\n\n")
    return events


async def chunks(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def stream_answer(*texts: str, headers: list[tuple[str, str]] | None = None) -> MockResponse:
    return MockResponse(200, [("Content-Type", "text/event-stream"), *(headers or [])], chunks(sse(*texts)))


CHALLENGE = MockResponse(
    403, {"Content-Type": "text/html", "cf-mitigated": "challenge"}, b"<title>Just a moment...</title>"
)


def record(cookie: str = "old", *, age: float = 60, expires_in: float | None = 3600) -> SessionRecord:
    """A cleared session whose clearance cookie is ``cookie``."""
    now = utcnow()
    return SessionRecord(
        provider="freenetfly",
        cookies=[Cookie("cf_clearance", cookie, "api.test")],
        user_agent="Mozilla/5.0 test",
        harvested_at=now - timedelta(seconds=age),
        expires_at=None if expires_in is None else now + timedelta(seconds=expires_in),
    )


class FakeRefresher:
    """Hands out the records it is given, in order, and remembers what it was asked."""

    def __init__(self, *records: SessionRecord, error: Exception | None = None) -> None:
        self.records = list(records)
        self.error = error
        self.calls: list[tuple[str, SessionRecord | None, str | None]] = []

    async def refresh(
        self, name: str, *, stale: SessionRecord | None, base_url: str | None = None, proxy: str | None = None
    ) -> SessionRecord:
        self.calls.append((name, stale, base_url))
        if self.error is not None:
            raise self.error
        return self.records.pop(0)


def cookie_of(request: Request) -> str:
    return dict((k.lower(), v) for k, v in request.headers).get("cookie", "")


async def collect(client: Client, **options: Any) -> list[Any]:
    return [item async for item in client.chat(MESSAGES, "gpt-4", **options)]


def test_seams_satisfy_their_protocols(cache: AuthCache) -> None:
    """MockTransport is an AsyncTransport and the fake refresher a Refresher, as the Client expects."""
    assert isinstance(MockTransport(lambda r: MockResponse()), AsyncTransport)
    assert isinstance(FakeRefresher(), Refresher)


async def test_chat_streams_items_from_chunks(cache: AuthCache) -> None:
    """A streamed answer delivered chunk by chunk becomes text deltas, then FinishReason and Usage."""
    transport = MockTransport(lambda request: stream_answer("Hel", "lo"))
    async with Client(FreeNetfly, cache=cache, transport=transport, base_url=API) as client:
        items = await collect(client)
    assert items[:2] == ["Hel", "lo"]
    assert FinishReason("stop") in items and Usage(3, 2, 5) in items
    (request,) = transport.requests
    assert request.url == API + FreeNetfly.chat_path
    assert orjson.loads(request.body or b"")["model"] == "gpt-4"


async def test_chat_batches_groups_the_items_of_one_network_read(cache: AuthCache) -> None:
    """chat_batches yields the items of each chunk the transport delivered together, and the same items as chat."""
    events = sse("Hel", "lo", "!")
    parts = [events[0] + events[1], events[2], events[3] + events[4]]

    def answer(request: Request) -> MockResponse:
        return MockResponse(200, [("Content-Type", "text/event-stream")], chunks(parts))

    async with Client(FreeNetfly, cache=cache, transport=MockTransport(answer), base_url=API) as client:
        batches = [list(batch) async for batch in client.chat_batches(MESSAGES, "gpt-4")]
        items = await collect(client)
    assert batches == [["Hel", "lo"], ["!"], [FinishReason("stop"), Usage(3, 3, 6)]]
    assert [item for batch in batches for item in batch] == items


async def test_refused_session_is_refreshed_once_and_retried(cache: AuthCache) -> None:
    """A challenge asks the refresher for a record newer than the one used, and the retry carries it."""
    stale, fresh = record("old"), record("new", age=0)
    cache.put(stale)
    refresher = FakeRefresher(fresh)

    def answer(request: Request) -> MockResponse:
        return stream_answer("ok") if "cf_clearance=new" in cookie_of(request) else CHALLENGE

    transport = MockTransport(answer)
    async with Client(FreeNetfly, cache=cache, transport=transport, refresher=refresher, base_url=API) as client:
        items = await collect(client)
    assert items[0] == "ok"
    assert [(name, s.harvested_at if s else None, url) for name, s, url in refresher.calls] == [
        ("freenetfly", stale.harvested_at, API)
    ]
    assert [cookie_of(r) for r in transport.requests] == ["cf_clearance=old", "cf_clearance=new"]


async def test_refresh_happens_once_per_call(cache: AuthCache) -> None:
    """A session still refused after one refresh raises instead of refreshing again."""
    from providers import CloudflareError

    cache.put(record("old"))
    refresher = FakeRefresher(record("new", age=0))
    transport = MockTransport(lambda request: CHALLENGE)
    async with Client(FreeNetfly, cache=cache, transport=transport, refresher=refresher, base_url=API) as client:
        with pytest.raises(CloudflareError):
            await collect(client)
    assert len(refresher.calls) == 1
    assert len(transport.requests) == 2


async def test_failed_refresh_raises_and_keeps_the_record(cache: AuthCache) -> None:
    """The refresher's error reaches the caller, and the client itself never touches the cached record."""
    stale = record("old")
    cache.put(stale)
    refresher = FakeRefresher(error=MissingAuthError("freenetfly: no way to refresh", provider="freenetfly"))
    transport = MockTransport(lambda request: CHALLENGE)
    async with Client(FreeNetfly, cache=cache, transport=transport, refresher=refresher, base_url=API) as client:
        with pytest.raises(MissingAuthError):
            await collect(client)
    assert cache.get("freenetfly") == stale


async def test_set_cookie_is_merged_before_aclose_returns(cache: AuthCache) -> None:
    """A Set-Cookie in the answer is merged into the cached record, and aclose waits for that write."""
    cache.put(record("old"))
    transport = MockTransport(lambda request: stream_answer("hi", headers=[("Set-Cookie", "extra=1; Path=/")]))
    async with Client(FreeNetfly, cache=cache, transport=transport, base_url=API) as client:
        await collect(client)
    merged = cache.get("freenetfly")
    assert merged is not None and merged.cookie_dict() == {"cf_clearance": "old", "extra": "1"}


async def test_broken_stream_from_the_transport_reaches_the_caller(cache: AuthCache) -> None:
    """A transport error in the middle of a body ends the chat with that error, after the items before it."""

    async def broken() -> AsyncIterator[bytes]:
        yield sse("one")[0]
        raise StreamError("the stream broke off")

    transport = MockTransport(lambda request: MockResponse(200, {"Content-Type": "text/event-stream"}, broken()))
    seen: list[Any] = []
    async with Client(FreeNetfly, cache=cache, transport=transport, base_url=API) as client:
        with pytest.raises(StreamError):
            async for item in client.chat(MESSAGES, "gpt-4"):
                seen.append(item)
    assert seen == ["one"]


async def test_models_are_cached_per_client(cache: AuthCache) -> None:
    """The live model list is loaded once per client (refresh reloads it), and clients do not share it."""
    transport = MockTransport(lambda request: MockResponse(200, {}, orjson.dumps({"data": [{"id": "live-1"}]})))
    from providers import OpenAICompatible

    async with Client(OpenAICompatible, transport=transport, base_url=API + "/v1") as client:
        assert await client.models() == ["live-1"]
        assert await client.models() == ["live-1"]
        assert client.resolve_model("live-1") == "live-1"
        assert len(transport.requests) == 1
        await client.models(refresh=True)
        assert len(transport.requests) == 2
    async with Client(OpenAICompatible, transport=transport, base_url=API + "/v1") as other:
        await other.models()
    assert len(transport.requests) == 3


async def test_client_closes_only_what_it_made(cache: AuthCache) -> None:
    """aclose leaves a transport it was given open, and a closed client refuses new calls."""
    transport = MockTransport(lambda request: stream_answer("hi"))
    client = Client(FreeNetfly, cache=cache, transport=transport, base_url=API)
    await collect(client)
    await client.aclose()
    assert not transport.closed
    with pytest.raises(RuntimeError, match="closed"):
        await collect(client)


async def test_client_by_name(cache: AuthCache) -> None:
    """A provider can be named by its string, as on the command line."""
    async with Client("freenetfly", cache=cache, transport=MockTransport(lambda r: stream_answer("x"))) as client:
        assert client.provider is FreeNetfly


async def test_classmethods_share_the_loop_default_client() -> None:
    """The classmethods reuse one default client per settings in a loop, until close_transport closes it."""
    first = Cerebras.client(base_url=API)
    assert Cerebras.client(base_url=API) is first
    assert Cerebras.client(base_url=API + ":81") is not first
    await close_transport()
    assert Cerebras.client(base_url=API) is not first


def test_unsupported_curl_cffi_fails_at_import() -> None:
    """On a curl_cffi version the fence was not written for, importing the transport fails with a clear message."""
    code = "import curl_cffi; curl_cffi.__version__ = '0.10.1'; import providers._transport._curl"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert "ImportError: harvest's transport uses curl_cffi internals and supports curl_cffi >=" in result.stderr
    assert "found 0.10.1" in result.stderr


CHALLENGE_PAGE = b"<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>"
CHALLENGE_PAGE += b'<script src="/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1"></script></body></html>'


async def test_html_challenge_with_status_200_heals(cache: AuthCache) -> None:
    """A challenge page served with 200 in place of the event stream is refreshed and retried like a 403.

    Regression (issue 9, item 4): it was decoded as an event stream and reported as a truncated stream.
    """
    cache.put(record("old"))
    refresher = FakeRefresher(record("new", age=0))

    def answer(request: Request) -> MockResponse:
        if "cf_clearance=new" in cookie_of(request):
            return stream_answer("ok")
        return MockResponse(200, {"Content-Type": "text/html; charset=UTF-8"}, CHALLENGE_PAGE)

    transport = MockTransport(answer)
    async with Client(FreeNetfly, cache=cache, transport=transport, refresher=refresher, base_url=API) as client:
        items = await collect(client)
    assert items[0] == "ok"
    assert len(refresher.calls) == 1


async def test_html_page_where_a_stream_was_expected_is_a_provider_error(cache: AuthCache) -> None:
    """Any other 200 HTML page is a ProviderError naming what came back, not a stream error, and never refreshes."""
    from providers import CloudflareError, ProviderError

    refresher = FakeRefresher()
    page = b"<html><head><title>Sign in to continue</title></head></html>"
    transport = MockTransport(lambda request: MockResponse(200, {"Content-Type": "text/html"}, page))
    async with Client(FreeNetfly, cache=cache, transport=transport, refresher=refresher, base_url=API) as client:
        with pytest.raises(ProviderError) as info:
            await collect(client)
    assert not isinstance(info.value, StreamError | CloudflareError)
    assert "HTML page where an event stream or JSON was expected" in str(info.value)
    assert "Sign in to continue" in str(info.value)
    assert refresher.calls == []


async def test_untyped_challenge_page_heals_and_untyped_stream_still_streams(cache: AuthCache) -> None:
    """With no Content-Type, a body with a challenge's markers heals like a 403, and a real stream is decoded whole."""
    cache.put(record("old"))
    refresher = FakeRefresher(record("new", age=0))

    def answer(request: Request) -> MockResponse:
        if "cf_clearance=new" in cookie_of(request):
            return MockResponse(200, {}, chunks(sse("o", "k")))  # an event stream, untyped
        return MockResponse(200, {}, CHALLENGE_PAGE)

    transport = MockTransport(answer)
    async with Client(FreeNetfly, cache=cache, transport=transport, refresher=refresher, base_url=API) as client:
        items = await collect(client)
    assert items[:2] == ["o", "k"] and FinishReason("stop") in items
    assert len(refresher.calls) == 1
