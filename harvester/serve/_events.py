"""An event stream the gateway writes to the connection itself: the head built once, one send per write.

aiohttp's ``StreamResponse`` builds a header multidict, a ``Date``, a status line and a chunk frame through
several Python layers for every response, and its writer checks and counts every write: for a small streamed
completion that was about a tenth of the server's CPU. ``EventStream`` sends the same bytes with none of it:
the head is constant but for its ``Date`` (formatted once a second), each write is one chunk frame and one
``transport.write``, and the end is the last events, the zero-length chunk and nothing else.

The handler then returns ``SENT`` (or ``SENT_CLOSE``), a ``StreamResponse`` whose end aiohttp sees as already
sent, so that it neither prepares nor ends it again and keeps the connection alive (or closes it) as the head
said. That uses three of aiohttp's private response attributes (``_eof_sent``, ``_keep_alive``, ``_status``),
in this module only; the connection and its writer are reached through the public ``request.writer``.
"""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate
from typing import Any

from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE, HttpVersion11

from . import _limits  # noqa: F401  (its check of the aiohttp version covers the internals used here too)

#: Past this many bytes queued on the connection, a write waits for the client (as aiohttp's writer does).
_HIGH_WATER = 64 * 1024
_END = b"0\r\n\r\n"
_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Server: " + SERVER_SOFTWARE.encode() + b"\r\n"
)


class _Sent(web.StreamResponse):
    """A response already written, end included: aiohttp's ``prepare`` and ``write_eof`` do nothing with it.

    It holds no state of any request, so one instance serves them all (one that keeps the connection, one that
    closes it).
    """

    _eof_sent = True

    def __init__(self, keep_alive: bool) -> None:
        super().__init__(status=200)
        self._keep_alive = keep_alive


SENT = _Sent(keep_alive=True)
SENT_CLOSE = _Sent(keep_alive=False)


class _Date:
    """The ``Date`` header line, formatted again only when the second changes (and with it the whole head of a
    chunked keep-alive stream, the common one)."""

    __slots__ = ("head", "line", "second")

    def __init__(self) -> None:
        self.second = -1
        self.line = self.head = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.line = b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n"
            self.head = _HEAD + self.line + b"Transfer-Encoding: chunked\r\n\r\n"
        return self.line

    def chunked_head(self) -> bytes:
        """The whole head of a chunked keep-alive stream."""
        self()
        return self.head


_date = _Date()


class EventStream:
    """``text/event-stream`` on a request's connection: ``start``, ``write``, then ``end``.

    Chunked on HTTP/1.1; on HTTP/1.0 the body runs to the connection's close. Every method raises
    ``ConnectionResetError`` once the client has gone.
    """

    __slots__ = ("_chunked", "_head", "_transport", "_writer", "response")

    def __init__(self, request: web.BaseRequest) -> None:
        self._writer: Any = request.writer
        self._transport: asyncio.WriteTransport | None = self._writer.transport
        self._chunked = request.version == HttpVersion11
        keep_alive = self._chunked and request.keep_alive
        #: What the handler returns: a response aiohttp sees as sent, keeping the connection or closing it.
        self.response: web.StreamResponse = SENT if keep_alive else SENT_CLOSE
        head = _HEAD + _date()
        if self._chunked:
            head += b"Transfer-Encoding: chunked\r\n"
        if not keep_alive:
            head += b"Connection: close\r\n"
        self._head: bytes | None = head + b"\r\n"

    @classmethod
    def on_connection(cls, transport: asyncio.WriteTransport, writer: Any) -> EventStream:
        """A chunked HTTP/1.1 stream on a keep-alive connection that has no request object (the fast lane's);
        ``writer.drain()`` waits for the client."""
        self = cls.__new__(cls)
        self._writer = writer
        self._transport = transport
        self._chunked = True
        self.response = SENT
        self._head = _date.chunked_head()
        return self

    def _send(self, data: bytes, *, last: bool = False) -> asyncio.WriteTransport:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection")
        head, self._head = self._head, None
        if self._chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data) if data else b""
            if last:
                data += _END
        transport.write(data if head is None else head + data)
        return transport

    async def write(self, data: bytes) -> None:
        """Send ``data`` (with the head, the first time); wait while the client is behind."""
        transport = self._send(data)
        if transport.get_write_buffer_size() > _HIGH_WATER:
            await self._writer.drain()

    def end(self, data: bytes = b"") -> None:
        """Send ``data`` and the end of the body (with the head, if nothing was sent yet)."""
        self._send(data, last=True)
