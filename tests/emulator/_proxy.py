"""An authenticating HTTP forward proxy for tests, in front of the emulator on loopback.

It speaks just enough HTTP/1.1 to stand in for a paid proxy:

- every request needs ``Proxy-Authorization: Basic`` with the configured user and password; without them (or
  with wrong ones) it answers **407** with ``Proxy-Authenticate: Basic realm="..."`` and keeps the connection
  (``username=None`` makes an open proxy that asks for nothing);
- an authenticated absolute-URI request (``GET http://127.0.0.1:PORT/path HTTP/1.1``) is forwarded in
  origin form without the proxy's headers, and the answer is streamed back as it arrives (SSE included), then
  the connection is closed (``Connection: close`` both ways keeps the framing trivial);
- an authenticated ``CONNECT host:port`` opens a tunnel and pipes bytes both ways;
- only loopback targets are served (403 otherwise): a test proxy must never reach the outside.

Counters (``stats``): ``authenticated`` (requests and CONNECTs with the right credentials), ``refused`` (407s),
split into ``refused_with_credentials`` (the wrong ones were sent) and ``refused_without_credentials``,
``forwarded``, ``tunnels``, and ``paths`` ({path: count} of forwarded requests).

Run it like the emulator: ``AuthProxy`` on the caller's loop (``async with``), ``ProxyThread`` on a loop of its
own, or the ``auth_proxy`` / ``proxy_factory`` fixtures (``tests/emulator/fixtures.py``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import threading
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

from ._server import ServerThread

USERNAME = "proxy-user"
PASSWORD = "pr0xy-s3cret-pw"  # distinctive, so "never printed" tests can search for it
REALM = "harvest-test-proxy"

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
_HEAD_LIMIT = 64 * 1024
_STOP_DEADLINE = 5.0
# Headers that describe one hop, never forwarded; Proxy-Authorization above all.
_HOP_BY_HOP = frozenset({"proxy-authorization", "proxy-connection", "connection", "keep-alive", "te", "upgrade"})
_REFUSAL_BODY = (
    b"<!doctype html><html><head><title>407 Proxy Authentication Required</title></head>"
    b"<body><h1>Proxy Authentication Required</h1></body></html>"
)

Headers = list[tuple[str, str]]


class _BadRequest(Exception):
    """Internal: the client sent something this proxy will not serve; answer ``status`` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class AuthProxy:
    """The proxy on the current event loop: ``async with AuthProxy() as proxy: proxy.auth_url``."""

    def __init__(
        self,
        username: str | None = USERNAME,
        password: str = PASSWORD,
        *,
        realm: str = REALM,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.username = username
        self.password = password
        self.realm = realm
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._url: str | None = None
        # Protects ``_stats``: connections are served on the proxy's loop, the counters are read from tests.
        self._lock = threading.Lock()
        self._stats = _fresh_stats()
        # Strong references to the connection handlers, so stop() can cancel the ones still piping.
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` with no credentials."""
        if self._url is None:
            raise RuntimeError("the proxy is not running; use it as a context manager or call start()")
        return self._url

    @property
    def auth_url(self) -> str:
        """The proxy URL with the right credentials, as a user passes it to ``--proxy``."""
        if self.username is None:
            return self.url
        return self.url_for(self.username, self.password)

    def url_for(self, username: str, password: str) -> str:
        """The proxy URL with these credentials (percent-encoded)."""
        scheme, _, hostport = self.url.partition("://")
        return f"{scheme}://{quote(username, safe='')}:{quote(password, safe='')}@{hostport}"

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters."""
        with self._lock:
            snap = dict(self._stats)
            snap["paths"] = dict(snap["paths"])
            return snap

    def reset(self) -> None:
        """Zero the counters."""
        with self._lock:
            self._stats = _fresh_stats()

    async def start(self) -> str:
        """Bind and serve; returns the URL without credentials (port 0 picks a free port)."""
        if self._server is not None:
            raise RuntimeError("proxy already started")
        self._server = await asyncio.start_server(self._on_connection, self._host, self._port, limit=_HEAD_LIMIT)
        host, port = self._server.sockets[0].getsockname()[:2]
        self._url = f"http://{host}:{port}"
        return self._url

    async def stop(self) -> None:
        """Stop listening and cut every open connection (tunnels and streams included)."""
        server, self._server = self._server, None
        self._url = None
        if server is None:
            return
        server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.wait(handlers, timeout=_STOP_DEADLINE)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(server.wait_closed(), _STOP_DEADLINE)

    async def __aenter__(self) -> AuthProxy:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- serving ---------------------------------------------------------------------------------------------

    def _count(self, name: str, path: str | None = None) -> None:
        with self._lock:
            self._stats[name] += 1
            if path is not None:
                self._stats["paths"][path] = self._stats["paths"].get(path, 0) + 1

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # the client went away mid-request; nothing to answer
        except _BadRequest as exc:
            with contextlib.suppress(ConnectionError, OSError):
                writer.write(_simple_response(exc.status, exc.reason, b"", close=True))
                await writer.drain()
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer 407s on a kept-alive connection until an authenticated request, which ends it."""
        while True:
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # the client closed the idle connection
            method, target, headers = _parse_head(raw)
            body = await _read_body(reader, headers)
            credentials = _header(headers, "proxy-authorization")
            if not self._authorized(credentials):
                self._count("refused_with_credentials" if credentials else "refused_without_credentials")
                self._count("refused")
                writer.write(self._refusal())
                await writer.drain()
                if (_header(headers, "connection") or "").lower() == "close":
                    return
                continue
            if self.username is not None:
                self._count("authenticated")
            if method == "CONNECT":
                await self._tunnel(target, reader, writer)
            else:
                await self._forward(method, target, headers, body, writer)
            return

    def _authorized(self, credentials: str | None) -> bool:
        if self.username is None:
            return True  # an open proxy
        scheme, _, token = (credentials or "").strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return decoded == f"{self.username}:{self.password}"

    def _refusal(self) -> bytes:
        return _simple_response(
            407,
            "Proxy Authentication Required",
            _REFUSAL_BODY,
            extra=[("Proxy-Authenticate", f'Basic realm="{self.realm}"'), ("Content-Type", "text/html")],
        )

    async def _forward(
        self, method: str, target: str, headers: Headers, body: bytes, writer: asyncio.StreamWriter
    ) -> None:
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            raise _BadRequest(400, "Bad Request")  # origin-form or https: not for a forward proxy
        host, port = _loopback(parts.hostname, parts.port or 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, port, limit=_HEAD_LIMIT)
        except OSError:
            raise _BadRequest(502, "Bad Gateway") from None
        try:
            lines = [f"{method} {path} HTTP/1.1"]
            lines += [f"{name}: {value}" for name, value in headers if name.lower() not in _HOP_BY_HOP]
            lines.append("Connection: close")
            upstream_writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await upstream_writer.drain()
            self._count("forwarded", parts.path or "/")
            # The answer's own framing (length, chunks or EOF) stays as is; only its hop headers change,
            # so the client knows the connection ends with this answer.
            head = await upstream_reader.readuntil(b"\r\n\r\n")
            status_line, *fields = head.decode("latin-1").split("\r\n")[:-2]
            kept = [f for f in fields if f.split(":", 1)[0].strip().lower() not in _HOP_BY_HOP]
            writer.write(("\r\n".join([status_line, *kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1"))
            await writer.drain()
            await _pipe(upstream_reader, writer)
        finally:
            upstream_writer.close()
            with contextlib.suppress(Exception):
                await upstream_writer.wait_closed()

    async def _tunnel(self, authority: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hostname, _, port = authority.rpartition(":")
        if not port.isdigit():
            raise _BadRequest(400, "Bad Request")
        host, port_number = _loopback(hostname.strip("[]"), int(port))
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, port_number)
        except OSError:
            raise _BadRequest(502, "Bad Gateway") from None
        try:
            self._count("tunnels")
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await writer.drain()
            async with asyncio.TaskGroup() as group:
                group.create_task(_pipe(reader, upstream_writer, half_close=True))
                group.create_task(_pipe(upstream_reader, writer, half_close=True))
        finally:
            upstream_writer.close()
            with contextlib.suppress(Exception):
                await upstream_writer.wait_closed()


class ProxyThread(ServerThread):
    """The proxy on a background thread with its own loop, for sync and async tests alike."""

    _what = "test-proxy"

    def __init__(self, username: str | None = USERNAME, password: str = PASSWORD, **options: Any) -> None:
        self._proxy = AuthProxy(username, password, **options)
        super().__init__(self._proxy)

    @property
    def username(self) -> str | None:
        """The user the proxy accepts (None: an open proxy)."""
        return self._proxy.username

    @property
    def password(self) -> str:
        """The password the proxy accepts."""
        return self._proxy.password

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` with no credentials."""
        return self._proxy.url

    @property
    def auth_url(self) -> str:
        """The proxy URL with the right credentials."""
        return self._proxy.auth_url

    def url_for(self, username: str, password: str) -> str:
        """The proxy URL with these credentials."""
        return self._proxy.url_for(username, password)

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (see the module docstring)."""
        return self._proxy.stats

    def reset(self) -> None:
        """Zero the counters."""
        self._proxy.reset()


def _fresh_stats() -> dict[str, Any]:
    return {
        "authenticated": 0,
        "refused": 0,
        "refused_with_credentials": 0,
        "refused_without_credentials": 0,
        "forwarded": 0,
        "tunnels": 0,
        "paths": {},
    }


def _parse_head(raw: bytes) -> tuple[str, str, Headers]:
    """The method, target and header fields of a request head (pure)."""
    request_line, *fields = raw.decode("latin-1").split("\r\n")[:-2]
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400, "Bad Request")
    headers: Headers = []
    for field_line in fields:
        name, sep, value = field_line.partition(":")
        if not sep or not name.strip():
            raise _BadRequest(400, "Bad Request")
        headers.append((name.strip(), value.strip()))
    return parts[0].upper(), parts[1], headers


def _header(headers: Headers, name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


async def _read_body(reader: asyncio.StreamReader, headers: Headers) -> bytes:
    if _header(headers, "transfer-encoding"):
        raise _BadRequest(411, "Length Required")  # chunked uploads: no client of ours sends them
    length = _header(headers, "content-length")
    if not length:
        return b""
    try:
        size = int(length)
    except ValueError:
        raise _BadRequest(400, "Bad Request") from None
    return await reader.readexactly(size)


def _loopback(hostname: str, port: int) -> tuple[str, int]:
    """Refuse any target off this machine: a test proxy must never reach the network."""
    if hostname.lower() not in _LOOPBACK:
        raise _BadRequest(403, "Forbidden")
    return hostname, port


def _simple_response(
    status: int, reason: str, body: bytes, *, extra: Headers | None = None, close: bool = False
) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in extra or []]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, half_close: bool = False) -> None:
    """Copy bytes until EOF; with ``half_close``, pass the EOF on (a tunnel's two directions end apart)."""
    with contextlib.suppress(ConnectionError, OSError):
        while chunk := await reader.read(64 * 1024):
            writer.write(chunk)
            await writer.drain()
        if half_close and writer.can_write_eof():
            writer.write_eof()
