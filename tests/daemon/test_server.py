"""The status server's limits: header-read timeout, idle keep-alive timeout, connection cap (issue 9, item 20)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from harvester.daemon._server import StatusServer


async def _report() -> dict[str, Any]:
    return {"daemon": {"running": True}, "providers": []}


def _make(**limits: Any) -> StatusServer:
    options: dict[str, Any] = {"header_timeout": 0.5, "idle_timeout": 0.4, "max_connections": 3}
    options.update(limits)
    return StatusServer(
        "127.0.0.1:0", report=_report, metrics=lambda: b"m 1\n", healthy=lambda: True, max_header_bytes=2048, **options
    )


@pytest.fixture
async def server() -> AsyncIterator[StatusServer]:
    """A status server on a free loopback port with short timeouts and a cap of 3 connections."""
    srv = _make()
    await srv.start()
    yield srv
    await srv.stop()


async def _no_connections(server: StatusServer) -> bool:
    """Whether the server's connection count drops to zero within a second."""
    for _ in range(100):
        if not server.connections:
            return True
        await asyncio.sleep(0.01)
    return False


async def _connect(server: StatusServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> tuple[bytes, float]:
    """Read to EOF under a deadline; return what came and how long the server took to close."""
    started = time.monotonic()
    data = await asyncio.wait_for(reader.read(), seconds)
    return data, time.monotonic() - started


async def test_routes_answer_and_keep_the_connection_alive(server: StatusServer) -> None:
    """/healthz, /status and /metrics answer on one kept-alive connection; other paths 404, other methods 405."""
    reader, writer = await _connect(server)
    answers = []
    for request in (b"GET /healthz HTTP/1.1", b"GET /status HTTP/1.1", b"GET /metrics HTTP/1.1", b"GET /x HTTP/1.1"):
        writer.write(request + b"\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        answers.append((head.split(b" ")[1], await reader.readexactly(length)))
    writer.write(b"POST /status HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b" 405 " in await reader.readuntil(b"\r\n\r\n")
    writer.close()
    assert [status for status, _ in answers] == [b"200", b"200", b"200", b"404"]
    assert answers[0][1] == b'{"ok":true}' and b'"providers"' in answers[1][1] and answers[2][1] == b"m 1\n"


async def test_partial_headers_are_cut_off(server: StatusServer) -> None:
    """A client that sends half a header and stalls gets a 408 and is disconnected after the header timeout."""
    reader, writer = await _connect(server)
    writer.write(b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    data, took = await _closed_within(reader, 5)
    writer.close()
    assert b" 408 " in data and took < 3
    assert await _no_connections(server)


async def test_a_silent_connection_is_closed(server: StatusServer) -> None:
    """A connection that never sends a byte is closed after the header timeout."""
    reader, writer = await _connect(server)
    data, took = await _closed_within(reader, 5)
    writer.close()
    assert took < 3 and await _no_connections(server)
    assert data == b"" or b" 408 " in data


async def test_an_idle_kept_alive_connection_is_closed(server: StatusServer) -> None:
    """After a response, a kept-alive connection with no next request is closed after the idle timeout."""
    reader, writer = await _connect(server)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await reader.readuntil(b"\r\n\r\n")
    await reader.readexactly(len(b'{"ok":true}'))
    data, took = await _closed_within(reader, 5)
    writer.close()
    assert data == b"" and took < 3


async def test_connections_are_capped() -> None:
    """Past max_connections, a new connection gets a 503 and is closed; the first ones keep being served."""
    server = _make(idle_timeout=30.0)
    await server.start()
    held = [await _connect(server) for _ in range(3)]
    for reader, writer in held:  # each one has been accepted once it is answered
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(len(b'{"ok":true}'))
    reader, writer = await _connect(server)
    data, _ = await _closed_within(reader, 5)
    writer.close()
    assert b" 503 " in data
    reader, writer = held[0]
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert b" 200 " in await reader.readuntil(b"\r\n\r\n")
    for _, held_writer in held:
        held_writer.close()
    await server.stop()


async def test_an_oversized_header_is_refused(server: StatusServer) -> None:
    """A request header past max_header_bytes gets a 431 and the connection is closed."""
    reader, writer = await _connect(server)
    writer.write(b"GET /status HTTP/1.1\r\nX-Big: " + b"a" * 4096 + b"\r\n\r\n")
    data, _ = await _closed_within(reader, 5)
    writer.close()
    assert b" 431 " in data


async def test_a_request_with_a_body_is_refused(server: StatusServer) -> None:
    """A request with a body is refused with 413 and the connection closed (no route takes one)."""
    reader, writer = await _connect(server)
    writer.write(b"GET /status HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
    data, _ = await _closed_within(reader, 5)
    writer.close()
    assert b" 413 " in data
