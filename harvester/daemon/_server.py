"""The optional status server: ``GET /healthz``, ``GET /status`` and ``GET /metrics`` on loopback.

Three GET routes with tiny answers do not need a web framework, and a daemon that runs for weeks needs limits
a framework does not give (aiohttp has no header-read timeout and no connection cap), so this is a small
HTTP/1.1 server on ``asyncio.start_server`` with every limit explicit:

* a request's header must arrive whole within ``header_timeout`` (slow or partial headers are cut off);
* a kept-alive connection with no next request is closed after ``idle_timeout``;
* at most ``max_connections`` are open (the next ones get a 503 and are closed);
* a request header is at most ``max_header_bytes``; requests with a body are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

DEFAULT_HOST = "127.0.0.1"


def parse_listen(listen: str) -> tuple[str, int]:
    """Split ``"host:port"``, ``":port"`` or ``"port"`` into a host (default 127.0.0.1) and a port.

    Raises:
        ValueError: the port is not a number from 0 to 65535.
    """
    text = listen.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]") or DEFAULT_HOST
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"listen: {listen!r} is not HOST:PORT") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"listen: port {port} is out of range")
    return host, port


_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
_PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"  # prometheus_client.CONTENT_TYPE_LATEST


class StatusServer:
    """A small HTTP server over the daemon's report and metrics; started and stopped by the daemon.

    Args:
        listen: ``HOST:PORT`` (see :func:`parse_listen`).
        report: returns the status report (``GET /status``).
        metrics: returns the Prometheus exposition (``GET /metrics``).
        healthy: False while shutting down (``GET /healthz`` answers 503).
        header_timeout: seconds a request's header may take to arrive, from its first byte (or the accept).
        idle_timeout: seconds a kept-alive connection may wait for its next request.
        max_connections: connections served at once; more get a 503.
        max_header_bytes: the longest request header accepted (431 beyond).
    """

    def __init__(
        self,
        listen: str,
        *,
        report: Callable[[], Awaitable[dict[str, Any]]],
        metrics: Callable[[], bytes],
        healthy: Callable[[], bool],
        header_timeout: float = 10.0,
        idle_timeout: float = 5.0,
        max_connections: int = 64,
        max_header_bytes: int = 16384,
    ) -> None:
        self.host, self.port = parse_listen(listen)
        self._report = report
        self._metrics = metrics
        self._healthy = healthy
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.max_header_bytes = max_header_bytes
        self._server: asyncio.Server | None = None
        # Strong references to the connection handlers, so stop() can cancel them and none is collected.
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def connections(self) -> int:
        """How many connections are open now."""
        return len(self._connections)

    async def start(self) -> None:
        """Bind and serve; ``self.port`` is the real port afterwards (useful with port 0)."""
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, limit=self.max_header_bytes, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop serving and close every connection."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(set(self._connections), timeout=2.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), 2.0)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= self.max_connections:
            with contextlib.suppress(OSError):
                writer.write(_response(503, b'{"error": "too many connections"}\n', close=True))
                await asyncio.wait_for(writer.drain(), 1.0)
            await _close(writer)
            return
        self._connections.add(task)
        try:
            await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            self._connections.discard(task)
            await _close(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = True
        while True:
            # A new connection gets the header timeout for its first request; a kept-alive one the idle timeout
            # for the first byte of the next, then the header timeout for the rest.
            start = b""
            if not first:
                try:
                    start = await asyncio.wait_for(reader.read(1), self.idle_timeout)
                except TimeoutError:
                    return
                if not start:
                    return  # the client closed it
            first = False
            try:
                async with asyncio.timeout(self.header_timeout):
                    head = start + await reader.readuntil(b"\r\n\r\n")
            except TimeoutError:
                writer.write(_response(408, b'{"error": "request header timeout"}\n', close=True))
                await writer.drain()
                return
            except asyncio.LimitOverrunError:
                writer.write(_response(431, b'{"error": "request header too large"}\n', close=True))
                await writer.drain()
                return
            status, body, content_type, keep_alive = await self._handle(head)
            writer.write(_response(status, body, content_type=content_type, close=not keep_alive))
            await writer.drain()
            if not keep_alive:
                return

    async def _handle(self, head: bytes) -> tuple[int, bytes, str, bool]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, b'{"error": "bad request line"}\n', "application/json", False
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                return 400, b'{"error": "bad header line"}\n', "application/json", False
            headers[name.lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
            return 413, b'{"error": "requests have no body here"}\n', "application/json", False
        if method != "GET":
            return 405, b'{"error": "only GET"}\n', "application/json", keep_alive
        path = target.split("?", 1)[0]
        try:
            if path == "/healthz":
                ok = self._healthy()
                return 200 if ok else 503, orjson.dumps({"ok": ok}), "application/json", keep_alive
            if path == "/status":
                body = orjson.dumps(await self._report(), option=orjson.OPT_INDENT_2)
                return 200, body, "application/json", keep_alive
            if path == "/metrics":
                return 200, self._metrics(), _PROMETHEUS_TEXT, keep_alive
        except Exception:
            return 500, b'{"error": "internal error"}\n', "application/json", False
        return 404, b'{"error": "not found"}\n', "application/json", keep_alive


def _response(status: int, body: bytes, *, content_type: str = "application/json", close: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    return head.encode("latin-1") + body


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 1.0)
