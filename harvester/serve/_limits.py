"""The server's limits: body size, header-read and idle timeouts, and caps on concurrent work.

The caps answer at once (503 with ``Retry-After``) rather than queue: a client that waits in a queue it cannot
see times out anyway, and the queue grows without bound under load.

aiohttp has an idle (keep-alive) timeout but no header-read timeout and no cap on open connections, so a connection
that opens and never finishes its request line would be held for the whole idle timeout, and a crowd of them would
hold file descriptors without bound; ``_HeaderDeadlineHandler`` closes such a connection after ``header_timeout``
and refuses a connection past ``max_connections``. It subclasses aiohttp's ``RequestHandler`` and is installed through ``AppRunner``'s
``_make_server``: the only uses of aiohttp internals, kept in this module.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds on what one client can make the server hold.

    Attributes:
        max_body: bytes a request body may have (413 past it).
        header_timeout: seconds a new connection gets to send its first request's headers.
        max_connections: connections open at once; one past it is closed as soon as it is accepted.
        idle_timeout: seconds a keep-alive connection may sit idle (and a request body may stall).
        max_requests: requests handled at once (503 past it).
        max_browser_runs: browser runs at once, each for another record (503 past it; joining a run is free).
        retry_after: the ``Retry-After`` seconds a 503 suggests.
        drain_timeout: seconds in-flight requests get to finish at shutdown.
        provider_timeout: seconds a gateway call to a provider may take in all, and may stay silent mid-stream
            (past it: 504, or an SSE error event once the stream has begun).
    """

    max_body: int = 1024 * 1024
    header_timeout: float = 10.0
    max_connections: int = 1024
    idle_timeout: float = 75.0
    max_requests: int = 512
    max_browser_runs: int = 2
    retry_after: int = 1
    drain_timeout: float = 10.0
    provider_timeout: float = 120.0


class Full(Exception):
    """A cap is reached: answer 503 with ``Retry-After``."""

    def __init__(self, what: str, retry_after: int) -> None:
        super().__init__(f"too many {what} at once; retry in {retry_after} s")
        self.retry_after = retry_after


class Gate:
    """Counts work in flight and refuses past ``cap`` (no queue: see the module docstring)."""

    def __init__(self, cap: int, what: str, retry_after: int) -> None:
        self.cap = cap
        self.what = what
        self.retry_after = retry_after
        self.in_flight = 0

    def enter(self) -> None:
        """Take a slot, or raise ``Full``."""
        if self.in_flight >= self.cap:
            raise Full(self.what, self.retry_after)
        self.in_flight += 1

    def leave(self) -> None:
        """Give a slot back."""
        self.in_flight -= 1


class _HeaderDeadlineHandler(RequestHandler):
    """aiohttp's connection handler, plus a deadline for the first request's headers."""

    __slots__ = ("_header_timeout", "_header_timer", "_max_connections")

    def __init__(self, *args: Any, header_timeout: float, max_connections: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._max_connections = max_connections
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        manager = self._manager
        if manager is not None and len(manager.connections) > self._max_connections:
            self.force_close()  # over the cap: close at once rather than hold another descriptor
            return
        self._header_timer = asyncio.get_running_loop().call_later(self._header_timeout, self._header_deadline)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().connection_lost(exc)

    def _header_deadline(self) -> None:
        # The timer is left to fire rather than cancelled when a head arrives: checking for that on every
        # read would cost a Python frame per read for the connection's whole life, and one idle timer per
        # connection costs nothing until it fires. A request head came: the idle timeout rules from here.
        self._header_timer = None
        if not self._request_count:
            self.force_close()


class _Server(web.Server):
    header_timeout = 10.0
    max_connections = 1024

    def __call__(self) -> RequestHandler:
        return _HeaderDeadlineHandler(
            self,
            loop=self._loop,
            header_timeout=self.header_timeout,
            max_connections=self.max_connections,
            **self._kwargs,
        )


class LimitedRunner(web.AppRunner):
    """An ``AppRunner`` whose connections have a header-read timeout and an idle timeout."""

    def __init__(self, app: web.Application, limits: Limits, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=limits.idle_timeout, **kwargs)
        self._header_timeout = limits.header_timeout
        self._max_connections = limits.max_connections

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # Same object, our connection handler: aiohttp builds the Server inside Application._make_handler.
        server.__class__ = _Server
        server.header_timeout = self._header_timeout  # type: ignore[attr-defined]
        server.max_connections = self._max_connections  # type: ignore[attr-defined]
        return server
