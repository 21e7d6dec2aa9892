"""The optional status server: ``GET /healthz``, ``GET /status`` and ``GET /metrics`` on loopback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

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


class StatusServer:
    """A tiny aiohttp app over the daemon's report and metrics; started and stopped by the daemon."""

    def __init__(
        self,
        listen: str,
        *,
        report: Callable[[], Awaitable[dict[str, Any]]],
        metrics: Callable[[], bytes],
        healthy: Callable[[], bool],
    ) -> None:
        self.host, self.port = parse_listen(listen)
        self._report = report
        self._metrics = metrics
        self._healthy = healthy
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Bind and serve; ``self.port`` is the real port afterwards (useful with port 0)."""
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/status", self._status)
        app.router.add_get("/metrics", self._metrics_handler)
        # No access log: one line per scrape every few seconds would drown the daemon's own events.
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop serving and close every connection."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        ok = self._healthy()
        return web.json_response({"ok": ok}, status=200 if ok else 503)

    async def _status(self, request: web.Request) -> web.Response:
        body = orjson.dumps(await self._report(), option=orjson.OPT_INDENT_2)
        return web.Response(body=body, content_type="application/json")

    async def _metrics_handler(self, request: web.Request) -> web.Response:
        response = web.Response(body=self._metrics())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response
