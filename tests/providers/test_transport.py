"""The transport's pooled, pre-configured curl handles: what a reused handle sends, and how transfers end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest

from providers import CurlTransport, StreamError, TransportError
from providers._transport import Request
from tests.emulator._server import EmulatorThread

from .conftest import MESSAGES

PATH = "/api/openai/v1/chat/completions"
BODY = orjson.dumps({"model": "gpt-4", "messages": MESSAGES, "stream": True})


@pytest.fixture
async def transport() -> AsyncIterator[CurlTransport]:
    """A curl transport of the test's own, closed at the end."""
    transport = CurlTransport()
    yield transport
    await transport.aclose()


@pytest.fixture
def emu(emulator: EmulatorThread) -> EmulatorThread:
    """The emulator with the Cloudflare gate open: these tests are about the wire, not the session."""
    emulator.configure(require_clearance=False)
    return emulator


def chat(url: str, headers: list[tuple[str, str]], **options: object) -> Request:
    return Request("POST", url + PATH, headers, BODY, **options)  # type: ignore[arg-type]


async def test_reused_handle_sends_only_the_new_headers(emu: EmulatorThread, transport: CurlTransport) -> None:
    """A pooled handle sends exactly the headers of its current request, whatever the previous one sent."""
    first = [("User-Agent", "first/1.0"), ("X-Only-First", "1"), ("Content-Type", "application/json")]
    second = [("User-Agent", "second/2.0"), ("Content-Type", "application/json")]
    for headers, impersonate in ((first, "chrome"), (second, "chrome"), (second, None), (first, "chrome")):
        async with await transport.handle_request(chat(emu.url, headers, impersonate=impersonate)) as response:
            assert response.status == 200
            assert b"[DONE]" in await response.aread()
        seen = emu.stats["last_headers"]
        assert seen["user-agent"] == headers[0][1]
        assert ("x-only-first" in seen) == (headers is first)
        assert "expect" not in seen
    assert transport.handles == (1, 1)  # one handle served every request, reconfigured when the key changed


async def test_get_after_post_on_the_same_handle(emu: EmulatorThread, transport: CurlTransport) -> None:
    """A handle that last sent a POST sends a plain GET (no body, no method left over) next."""
    async with await transport.handle_request(chat(emu.url, [("Content-Type", "application/json")])) as response:
        await response.aread()
    request = Request("GET", emu.url + "/v1/models", [("Accept", "application/json")])
    async with await transport.handle_request(request) as response:
        assert response.status == 200
        assert orjson.loads(await response.aread())


async def test_closing_the_transport_ends_open_streams(emu: EmulatorThread, transport: CurlTransport) -> None:
    """A stream still open when its transport closes raises a typed error instead of hanging or ending clean."""
    emu.configure(stream_chunks=200, drip_ms=20)
    response = await transport.handle_request(chat(emu.url, [("Content-Type", "application/json")]))
    await transport.aclose()
    with pytest.raises((StreamError, TransportError)):
        await response.aread()


async def test_requests_beyond_the_pool_wait_for_a_handle(emu: EmulatorThread) -> None:
    """With every handle busy, a request waits for one to come back instead of failing."""
    transport = CurlTransport(max_handles=2)

    async def one() -> bytes:
        async with await transport.handle_request(chat(emu.url, [("Content-Type", "application/json")])) as r:
            return await r.aread()

    bodies = await asyncio.wait_for(asyncio.gather(*[one() for _ in range(6)]), 10)
    assert all(b"[DONE]" in body for body in bodies)
    assert transport.handles == (2, 2)
    await transport.aclose()


async def test_each_transfer_keeps_its_own_deadline(emu: EmulatorThread, transport: CurlTransport) -> None:
    """One watchdog serves every transfer: each stream stops at its own deadline, set in any order, and a
    stream with a far deadline keeps going."""
    from providers import ProviderTimeout

    emu.configure(stream_chunks=1000, drip_ms=20)  # 20 s of stream unless stopped
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def stream(seconds: float) -> float:
        request = chat(emu.url, [("Content-Type", "application/json")], deadline=started + seconds)
        async with await transport.handle_request(request) as response:
            with pytest.raises(ProviderTimeout) as info:
                await response.aread()
        assert info.value.deadline_passed
        return loop.time() - started

    far = asyncio.create_task(stream(60.0))
    await asyncio.sleep(0.1)
    # Added later but due earlier: the watchdog must move forward twice, then on to 2.0 after 1.0 fires.
    second, first = await asyncio.gather(stream(2.0), stream(1.0))
    assert 1.0 <= first < 1.8
    assert 2.0 <= second < 2.8
    assert not far.done()  # still streaming
    far.cancel()
    with pytest.raises(asyncio.CancelledError):
        await far


async def test_idle_timeout_without_deadline(emu: EmulatorThread, transport: CurlTransport) -> None:
    """With no total deadline, a stream that stalls longer than the idle timeout ends with ProviderTimeout
    (curl's low-speed check, driven by the transport's timers)."""
    from providers import ProviderTimeout

    emu.configure(stream_chunks=3, drip_ms=4000)
    loop = asyncio.get_running_loop()
    started = loop.time()
    request = chat(emu.url, [("Content-Type", "application/json")], idle_timeout=1.0, deadline=None)
    async with await transport.handle_request(request) as response:
        with pytest.raises(ProviderTimeout) as info:
            await response.aread()
    assert not info.value.deadline_passed
    assert loop.time() - started < 3.5


async def test_transfers_finished_by_the_safety_net_are_delivered(
    emu: EmulatorThread, transport: CurlTransport
) -> None:
    """A transfer that curl finishes inside curl_cffi's safety-net action (``socket_action``, every 0.1 s) is
    handed to its response at once.

    Regression: that action drove curl without reading its "done" messages, so such a stream hung until its
    deadline (about one long stream in six did). Here the safety net runs every millisecond.
    """
    from providers import Client, FreeNetfly

    emu.configure(stream_chunks=2_000)
    client = Client(FreeNetfly, transport=transport, base_url=emu.url)
    loop = asyncio.get_running_loop()

    async def safety_net() -> None:
        while True:
            transport._multi.safety_net()  # type: ignore[union-attr]
            await asyncio.sleep(0.001)

    ticking = asyncio.create_task(safety_net())
    try:
        for _ in range(20):
            started = loop.time()
            items = [item async for item in client.chat(MESSAGES, "gpt-4", timeout=5)]
            assert sum(isinstance(item, str) for item in items) == 2_000
            assert loop.time() - started < 2.5
    finally:
        ticking.cancel()
        await client.aclose()


async def test_an_idle_transport_leaves_its_loop_asleep(emu: EmulatorThread, transport: CurlTransport) -> None:
    """The safety net drives curl every 0.1 s while a transfer runs, and not at all once the last one ended.

    Regression: curl_cffi's safety net ran every 0.1 s for the transport's whole life, so an idle server (or any
    client that had made one request) woke its loop ten times a second, forever, for nothing.
    """
    emu.configure(stream_chunks=6, drip_ms=60)
    multi = transport._bind()._multi
    runs = 0
    process_data = multi.process_data

    def counted(sockfd: int, ev_bitmask: int) -> None:
        nonlocal runs
        runs += sockfd == -1  # the safety net's (and curl's timers') action, not a socket's
        process_data(sockfd, ev_bitmask)

    multi.process_data = counted  # type: ignore[method-assign]
    async with await transport.handle_request(chat(emu.url, [("Content-Type", "application/json")])) as response:
        assert transport._multi is not None and transport._multi.safety_net_armed
        assert b"[DONE]" in await response.aread()
    assert runs >= 1  # the stream took about 0.3 s: the net ran meanwhile
    await asyncio.sleep(0.15)  # a run already due when the transfer ended may still come
    runs = 0
    await asyncio.sleep(0.35)
    assert runs == 0
    assert not transport._multi.safety_net_armed


def test_pyproject_pins_the_curl_cffi_versions_the_fence_supports() -> None:
    """pyproject's curl_cffi range is exactly the one the fence around its internals was written for."""
    import tomllib
    from pathlib import Path

    from providers._transport._curl import SUPPORTED

    data = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    (pin,) = [d for d in data["project"]["dependencies"] if d.startswith("curl_cffi")]
    low, high = (".".join(map(str, v)) for v in SUPPORTED)
    assert pin == f"curl_cffi>={low},<{high}"
