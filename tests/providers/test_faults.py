"""Retries, broken streams, deadlines and early close, against the emulator's fault knobs."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import stamina

from providers import (
    Cloudflare,
    CloudflareError,
    FinishReason,
    FreeNetfly,
    MissingAuthError,
    ProviderTimeout,
    RateLimitError,
    ResponseStatusError,
    StreamError,
)
from tests.emulator._server import EmulatorThread

from .conftest import MESSAGES


async def collect(gen: Any) -> list[Any]:
    return [item async for item in gen]


@pytest.fixture
def emu(emulator: EmulatorThread) -> EmulatorThread:
    """The emulator with the Cloudflare gate open: these tests are about the wire, not the session."""
    emulator.configure(require_clearance=False)
    return emulator


async def test_5xx_then_success(emu: EmulatorThread) -> None:
    """Two 503s are retried and the third attempt answers."""
    emu.configure(fail_next=2, fail_status=503)
    items = await collect(FreeNetfly.create_async_generator("gpt-4", MESSAGES, base_url=emu.url))
    assert FinishReason("stop") in items
    assert emu.stats["api_requests"]["/api/openai/v1/chat/completions"] == 3


async def test_5xx_gives_up_after_five_attempts(emu: EmulatorThread) -> None:
    """A provider that keeps failing raises ResponseStatusError after five attempts."""
    emu.configure(fail_next=10, fail_status=502)
    with pytest.raises(ResponseStatusError) as info:
        await collect(FreeNetfly.create_async_generator("gpt-4", MESSAGES, base_url=emu.url))
    assert info.value.status == 502
    assert emu.stats["api_requests"]["/api/openai/v1/chat/completions"] == 5


async def test_4xx_is_not_retried(emu: EmulatorThread) -> None:
    """A 404 (unknown model on the server) fails at once."""
    with pytest.raises(ResponseStatusError) as info:
        await collect(FreeNetfly.create_async_generator("gpt-4", MESSAGES, base_url=emu.url, extra_body={"model": "x"}))
    assert info.value.status == 404
    assert emu.stats["api_requests"]["/api/openai/v1/chat/completions"] == 1


async def test_429_honours_retry_after(emu: EmulatorThread) -> None:
    """A 429 with Retry-After waits that long (real waits here), then succeeds."""
    emu.configure(rate_limit_next=1, retry_after=0.4)
    with stamina.set_testing(False):
        started = time.monotonic()
        items = await collect(FreeNetfly.create_async_generator("gpt-4", MESSAGES, base_url=emu.url))
        elapsed = time.monotonic() - started
    assert FinishReason("stop") in items
    assert 0.4 <= elapsed < 3.0


async def test_429_gives_up_with_rate_limit_error(emu: EmulatorThread) -> None:
    """Persistent rate limiting raises RateLimitError carrying the server's hint."""
    emu.configure(rate_limit_next=10, retry_after=7)
    with pytest.raises(RateLimitError) as info:
        await collect(FreeNetfly.create_async_generator("gpt-4", MESSAGES, base_url=emu.url))
    assert info.value.retry_after == 7


@pytest.mark.parametrize("provider", [FreeNetfly, Cloudflare])
async def test_cut_stream_is_a_stream_error(emu: EmulatorThread, provider: Any) -> None:
    """A stream dropped mid-way raises StreamError after the text that did arrive, and is not retried."""
    emu.configure(cut_stream=True)
    seen: list[Any] = []
    with pytest.raises(StreamError):
        async for item in provider.create_async_generator("", MESSAGES, base_url=emu.url):
            seen.append(item)
    assert seen and all(isinstance(i, str) for i in seen)
    assert emu.stats["api_requests_total"] == 1


@pytest.mark.parametrize("knob", ["malformed_event", "error_event"])
@pytest.mark.parametrize("provider", [FreeNetfly, Cloudflare])
async def test_bad_event_is_a_stream_error(emu: EmulatorThread, provider: Any, knob: str) -> None:
    """A malformed event or an error event in the stream raises StreamError."""
    emu.configure(**{knob: True})
    with pytest.raises(StreamError):
        await collect(provider.create_async_generator("", MESSAGES, base_url=emu.url))


async def test_early_close_is_prompt_and_session_stays_usable(emu: EmulatorThread) -> None:
    """Breaking out of a slow stream returns at once, and the next call on the pooled session works."""
    emu.configure(stream_chunks=200, drip_ms=50)
    gen = FreeNetfly.create_async_generator("gpt-4", MESSAGES, base_url=emu.url)
    started = time.monotonic()
    async for _ in gen:
        break
    await gen.aclose()
    assert time.monotonic() - started < 1.0
    emu.configure(stream_chunks=None, drip_ms=0)
    items = await collect(FreeNetfly.create_async_generator("gpt-4", MESSAGES, base_url=emu.url))
    assert FinishReason("stop") in items


async def test_total_deadline(emu: EmulatorThread) -> None:
    """curl's timeout is only an idle one; the total deadline stops a stream that keeps dripping."""
    emu.configure(stream_chunks=1000, drip_ms=20)
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as info:
        await collect(FreeNetfly.create_async_generator("gpt-4", MESSAGES, base_url=emu.url, timeout=1.5))
    assert info.value.deadline_passed
    assert time.monotonic() - started < 3.0


async def test_cancelled_call_leaves_session_usable(emu: EmulatorThread) -> None:
    """Cancelling a task mid-stream neither hangs nor breaks the next call."""
    emu.configure(stream_chunks=200, drip_ms=20)

    async def consume() -> None:
        await collect(FreeNetfly.create_async_generator("gpt-4", MESSAGES, base_url=emu.url))

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    emu.configure(stream_chunks=None, drip_ms=0)
    assert FinishReason("stop") in await collect(FreeNetfly.create_async_generator("gpt-4", MESSAGES, base_url=emu.url))


async def test_connection_refused_is_retried_then_raised() -> None:
    """An unreachable server is retried, then raises a TransportError subclass, never a curl_cffi error."""
    from providers import ConnectError

    with pytest.raises(ConnectError):
        await collect(FreeNetfly.create_async_generator("gpt-4", MESSAGES, base_url="http://127.0.0.1:9"))


async def test_challenge_without_browser_names_the_command(
    emulator: EmulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no harvester installed, a challenge becomes MissingAuthError naming the exact harvest command."""
    import sys

    monkeypatch.setitem(sys.modules, "harvester", None)  # what `import harvester` sees when it is not installed
    with pytest.raises(MissingAuthError) as info:
        await collect(FreeNetfly.create_async_generator("gpt-4", MESSAGES, base_url=emulator.url))
    assert f"harvest --provider freenetfly --base-url {emulator.url}" in str(info.value)
    assert isinstance(info.value.__cause__, ImportError)


async def test_challenge_without_healing_is_cloudflare_error(emulator: EmulatorThread) -> None:
    """A challenge seen with healing impossible (an explicit model list call) is a CloudflareError."""
    from providers import Client

    async with Client(FreeNetfly, base_url=emulator.url) as client:
        call = client._new_call(timeout=10, heal=False)
        with pytest.raises(CloudflareError):
            await call.send(FreeNetfly._request(call, "POST", call.url(FreeNetfly.chat_path), {}))
