"""The server's limits: body size, header-read and idle timeouts, and caps on concurrent work.

The caps answer at once (503 with ``Retry-After``) rather than queue: a client that waits in a queue it cannot
see times out anyway, and the queue grows without bound under load.

aiohttp has an idle (keep-alive) timeout but no header-read timeout and no cap on open connections, so a connection
that opens and never finishes its request line would be held for the whole idle timeout, and a crowd of them would
hold file descriptors without bound; ``_HeaderDeadlineHandler`` closes such a connection after ``header_timeout``
and refuses a connection past ``max_connections``. It also hands whole streamed-completion requests of idle
connections to the fast lane (``_lane``), and keeps aiohttp's drain, keep-alive and header deadline right for
them. It subclasses aiohttp's ``RequestHandler`` and is installed through ``AppRunner``'s ``_make_server``: the
only uses of aiohttp internals (its handler's attributes), kept in this module.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from .._exceptions import UnsupportedDependency

#: The aiohttp series whose internals this module and ``_events`` were written against (pyproject.toml pins it).
AIOHTTP_SERIES = "3.14"


if not aiohttp.__version__.startswith(AIOHTTP_SERIES + "."):
    raise UnsupportedDependency(
        f"harvest serve relies on aiohttp {AIOHTTP_SERIES}.x internals, but aiohttp {aiohttp.__version__} is "
        f"installed; install the version harvest pins: pip install 'aiohttp>={AIOHTTP_SERIES},<3.15'"
    )


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
    """aiohttp's connection handler, plus a deadline for the first request's headers, and the connection's side
    of the fast lane (``_lane``): whole streamed-completion requests the lane takes never reach aiohttp."""

    __slots__ = (
        "_header_timeout",
        "_header_timer",
        "_lane",
        "_lane_busy",
        "_lane_held",
        "_lane_ok",
        "_max_connections",
    )

    def __init__(
        self, *args: Any, header_timeout: float, max_connections: int, lane: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._max_connections = max_connections
        self._header_timer: asyncio.TimerHandle | None = None
        self._lane = lane
        self._lane_ok = lane is not None  # False once aiohttp may hold half a request of this connection
        self._lane_busy = False  # the lane is answering a request of this connection
        self._lane_held: list[bytes] = []  # what arrived meanwhile, for after it

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
        self._lane_held.clear()
        super().connection_lost(exc)

    def _header_deadline(self) -> None:
        # The timer is left to fire rather than cancelled when a head arrives: checking for that on every
        # read would cost a Python frame per read for the connection's whole life, and one idle timer per
        # connection costs nothing until it fires. A request head came: the idle timeout rules from here.
        self._header_timer = None
        if not self._request_count:
            self.force_close()

    # -- the fast lane's side ---------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._lane_ok and data:  # (aiohttp feeds itself b"" when it resumes reading: nothing to frame)
            lane = self._lane
            if self._lane_busy:
                # A request behind the one the lane answers (pipelined): it waits its turn, as in aiohttp.
                self._lane_held.append(data)
                if len(self._lane_held) == 16 and self.transport is not None:
                    self.transport.pause_reading()  # bounded: read no more until the lane is done
                return
            if data[:36] == lane.start and self._idle() and lane.take(self, data):
                return
            # aiohttp parses it: safe to come back to the lane only if it ends on a request's end.
            self._lane_ok = lane.frame(data) is not None
        super().data_received(data)

    def _idle(self) -> bool:
        """aiohttp waits for this connection's next request and holds none (nor any part of one)."""
        waiter = self._waiter
        return (
            waiter is not None
            and not waiter.done()
            and not self._messages
            and not self._force_close
            and not self._close
            and not self._upgraded
            and self._payload_parser is None
            and self.transport is not None
        )

    def lane_begin(self) -> None:
        """The lane answers a request of this connection: it counts as aiohttp's own would (header deadline,
        shutdown's drain, keep-alive)."""
        self._lane_busy = True
        self._request_count += 1
        self._request_in_progress = True

    def lane_end(self) -> None:
        """The lane's answer is sent: wake a draining shutdown, restart the keep-alive clock, then take what
        arrived meanwhile."""
        self._lane_busy = False
        self._request_in_progress = False
        waiter = self._handler_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._force_close or self._close or self.transport is None:
            self.force_close()  # stopping (or gone): aiohttp's own request would end the connection here too
            return
        self._next_keepalive_close_time = self._loop.time() + self._keepalive_timeout
        if self._keepalive_handle is None and self._keepalive_timeout > 0:
            self._keepalive_handle = self._loop.call_at(self._next_keepalive_close_time, self._process_keepalive)
        held, self._lane_held = self._lane_held, []
        if held:
            if len(held) >= 16:
                self.transport.resume_reading()
            self.data_received(b"".join(held))

    async def drain(self) -> None:
        """Wait while the client is behind (what aiohttp's writer does, without making one per request)."""
        await self._drain_helper()

    def _process_keepalive(self) -> None:
        if self._lane_busy:
            # aiohttp sees no request in progress (the lane's is not one of its own): keep the connection.
            self._keepalive_handle = self._loop.call_at(
                self._loop.time() + self._keepalive_timeout, self._process_keepalive
            )
            return
        super()._process_keepalive()


class _Server(web.Server):
    header_timeout = 10.0
    max_connections = 1024
    lane: Any = None

    def __call__(self) -> RequestHandler:
        return _HeaderDeadlineHandler(
            self,
            loop=self._loop,
            header_timeout=self.header_timeout,
            max_connections=self.max_connections,
            lane=self.lane,
            **self._kwargs,
        )


class LimitedRunner(web.AppRunner):
    """An ``AppRunner`` whose connections have a header-read timeout and an idle timeout (and, given a
    ``lane``, the fast lane for streamed completions)."""

    def __init__(self, app: web.Application, limits: Limits, *, lane: Any = None, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=limits.idle_timeout, **kwargs)
        self._header_timeout = limits.header_timeout
        self._max_connections = limits.max_connections
        self._lane = lane

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # Same object, our connection handler: aiohttp builds the Server inside Application._make_handler.
        server.__class__ = _Server
        server.header_timeout = self._header_timeout  # type: ignore[attr-defined]
        server.max_connections = self._max_connections  # type: ignore[attr-defined]
        server.lane = self._lane  # type: ignore[attr-defined]
        return server
