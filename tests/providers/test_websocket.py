"""The WebSocket I/O module against the emulator's agent route: upgrade, refusals, deadlines, faults and close."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from providers import CloudflareError, ConnectError, FinishReason, ProviderTimeout, ResponseStatusError, StreamError
from providers._agent_protocol import AgentDecoder, chat_request, opening_frames, socket_url, split_messages
from providers._websocket import WebSocket, WebSocketConnector
from tests.emulator import EmulatorThread

from .conftest import CLIENT_HINTS, MESSAGES, USER_AGENT, clearance

MODEL = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
REPLY = "Hello from the cloudflare emulator. You said: hi there"


@pytest.fixture
async def connector() -> AsyncIterator[WebSocketConnector]:
    """A connector closed at the end of the test."""
    connector = WebSocketConnector()
    yield connector
    await connector.aclose()


def headers(base_url: str, cookie: str | None) -> list[tuple[str, str]]:
    """The browser identity a record gives: UA, client hints, the clearance cookie and the page's origin."""
    lines = [("User-Agent", USER_AGENT), *CLIENT_HINTS.items(), ("Origin", base_url)]
    return [*lines, ("Cookie", f"cf_clearance={cookie}")] if cookie else lines


async def open_socket(connector: WebSocketConnector, emulator: EmulatorThread, cleared: bool = True) -> WebSocket:
    cookie = clearance(emulator.url) if cleared else None
    url = socket_url(emulator.url, "playground-test", MODEL, "pk")
    return await connector.connect(
        url, headers(emulator.url, cookie), timeout=5, impersonate="chrome", provider="cloudflare"
    )


async def chat(sock: WebSocket, timeout: float = 5) -> list[Any]:
    """Speak the protocol over the socket and collect the reply; the decoder judges the end."""
    system, ui = split_messages(MESSAGES)
    for frame in [*opening_frames("playground-test", model=MODEL, temperature=None, system=system)]:
        await sock.send(frame)
    await sock.send(chat_request("req_1", ui))
    decoder = AgentDecoder("req_1")
    items: list[Any] = []
    while not decoder.finished:
        message = await sock.receive(timeout)
        if message is None:
            items += decoder.close()
            break
        items += decoder.feed(message)
    return items


async def test_a_cleared_socket_streams_the_reply(connector: WebSocketConnector, emulator: EmulatorThread) -> None:
    """With the clearance, UA and origin, the socket carries the opening sequence and the reply."""
    sock = await open_socket(connector, emulator)
    try:
        items = await chat(sock)
    finally:
        await sock.aclose()
    assert "".join(i for i in items if isinstance(i, str)) == REPLY
    assert FinishReason("stop") in items
    stats = emulator.stats
    assert stats["last_headers"]["origin"] == emulator.url
    assert stats["last_headers"]["user-agent"] == USER_AGENT
    assert stats["last_headers"]["sec-ch-ua"] == CLIENT_HINTS["sec-ch-ua"]
    assert stats["agent_frames"][0] == "cf_agent_stream_resume_request"


async def test_challenge_at_the_upgrade_is_a_cloudflare_error(
    connector: WebSocketConnector, emulator: EmulatorThread
) -> None:
    """An upgrade without clearance raises CloudflareError (status 403), not a broken socket."""
    with pytest.raises(CloudflareError) as info:
        await open_socket(connector, emulator, cleared=False)
    assert info.value.status == 403
    assert emulator.stats["agent_sockets_opened"] == 0


async def test_refused_upgrade_status_is_typed(connector: WebSocketConnector, emulator: EmulatorThread) -> None:
    """A 503 at the upgrade raises ResponseStatusError with that status."""
    emulator.configure(fail_next=1, fail_status=503)
    with pytest.raises(ResponseStatusError) as info:
        await open_socket(connector, emulator)
    assert info.value.status == 503 and not isinstance(info.value, CloudflareError)


async def test_fragmented_messages_are_joined(connector: WebSocketConnector, emulator: EmulatorThread) -> None:
    """Messages split across continuation frames (even mid-character) arrive whole."""
    emulator.configure(fragment_frames=True, stream_chunks=50, chunk_text="é€ ")
    sock = await open_socket(connector, emulator)
    try:
        items = await chat(sock)
    finally:
        await sock.aclose()
    assert "".join(i for i in items if isinstance(i, str)) == "é€ " * 50


async def test_close_mid_stream_is_truncation(connector: WebSocketConnector, emulator: EmulatorThread) -> None:
    """A socket the server closes before `finish` ends in StreamError (truncated)."""
    emulator.configure(cut_stream=True)
    sock = await open_socket(connector, emulator)
    try:
        with pytest.raises(StreamError, match=r"truncated|broke off"):
            await chat(sock)
    finally:
        await sock.aclose()


async def test_slow_first_frame_hits_the_receive_deadline(
    connector: WebSocketConnector, emulator: EmulatorThread
) -> None:
    """A receive waits no longer than its timeout: a reply held back longer raises ProviderTimeout."""
    emulator.configure(first_frame_ms=2000)
    sock = await open_socket(connector, emulator)
    try:
        with pytest.raises(ProviderTimeout):
            await chat(sock, timeout=0.2)
    finally:
        await sock.aclose()


async def test_early_close_closes_the_server_socket(connector: WebSocketConnector, emulator: EmulatorThread) -> None:
    """`aclose()` mid-reply closes the connection: the server sees its socket end."""
    emulator.configure(drip_ms=20, stream_chunks=500)
    sock = await open_socket(connector, emulator)
    await sock.send(chat_request("req_1", split_messages(MESSAGES)[1]))
    assert await sock.receive(5) is not None
    assert emulator.stats["agent_sockets_open"] == 1
    await sock.aclose()
    await sock.aclose()  # twice is fine
    for _ in range(200):
        if emulator.stats["agent_sockets_open"] == 0:
            break
        await asyncio.sleep(0.01)
    assert emulator.stats["agent_sockets_open"] == 0


async def test_refused_connection_is_a_connect_error(connector: WebSocketConnector) -> None:
    """Nothing listening: ConnectError."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectError):
        await connector.connect(f"ws://127.0.0.1:{port}/agents/playground/x", [], timeout=2)


async def test_closed_connector_is_misuse() -> None:
    """Connecting through a closed connector is a RuntimeError, not a ProviderError."""
    connector = WebSocketConnector()
    await connector.aclose()
    with pytest.raises(RuntimeError):
        await connector.connect("ws://127.0.0.1:1/", [], timeout=1)


async def test_sockets_beyond_the_limit_wait_for_a_free_slot(emulator: EmulatorThread) -> None:
    """With every slot held, a connect waits within its timeout (ProviderTimeout), and proceeds once one closes."""
    connector = WebSocketConnector(max_sockets=1)
    try:
        first = await open_socket(connector, emulator)
        url = socket_url(emulator.url, "playground-two", MODEL, "pk")
        lines = headers(emulator.url, clearance(emulator.url))
        with pytest.raises(ProviderTimeout, match="busy"):
            await connector.connect(url, lines, timeout=0.3, impersonate="chrome")
        waiting = asyncio.ensure_future(connector.connect(url, lines, timeout=5, impersonate="chrome"))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await first.aclose()
        second = await waiting
        await second.aclose()
        # A refused upgrade gives its slot back too.
        emulator.configure(fail_next=1, fail_status=503)
        with pytest.raises(ResponseStatusError):
            await connector.connect(url, lines, timeout=5, impersonate="chrome")
        third = await connector.connect(url, lines, timeout=1, impersonate="chrome")
        await third.aclose()
    finally:
        await connector.aclose()
