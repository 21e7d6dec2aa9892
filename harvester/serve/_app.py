"""The aiohttp app behind ``harvest serve``: shared state, the middleware (auth, caps, errors, metrics) and the
server's lifecycle (``ServeApp.start`` / ``stop``, which drains in-flight requests under a deadline).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from cache import AuthCache
from harvester._config import Config

from ._limits import Full, Gate, LimitedRunner, Limits
from ._metrics import ServeMetrics
from ._runs import BrowserRuns
from ._sessions import SessionTable
from ._settings import ServeSettings

logger = logging.getLogger("harvest.serve")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Routes anyone may call: FlareSolverr clients probe them, and load balancers check health.
PUBLIC = frozenset({("GET", "/"), ("GET", "/health"), ("GET", "/healthz"), ("HEAD", "/"), ("HEAD", "/health")})
# Routes that hand out whole records: a token is needed even on loopback.
_SECRET_PREFIX = "/v1/sessions"
#: The app's fast lane for streamed completions (``_lane``), which its runner gives the connections.
LANE: web.AppKey[Any] = web.AppKey("harvest_serve_lane", object)


class BadRequest(Exception):
    """Malformed input: answered as 400 (413 for a body over the limit) in the route's API shape."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("harvest")
    except Exception:  # not installed (a source checkout): still answer
        return "0"


class ServeState:
    """What every handler shares: settings, the cache, the curl transport, browser runs, sessions, metrics."""

    def __init__(
        self,
        settings: ServeSettings,
        *,
        cache: AuthCache,
        config: Config,
        harvester: Any | None = None,
        flight: Any | None = None,
        on_secret: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.limits: Limits = settings.limits
        self.cache = cache
        self.config = config
        self.version = _version()
        self.metrics = ServeMetrics()
        self.requests = Gate(settings.limits.max_requests, "requests", settings.limits.retry_after)
        self.runs = BrowserRuns(
            cache,
            config=config,
            gate=Gate(settings.limits.max_browser_runs, "browser runs", settings.limits.retry_after),
            metrics=self.metrics,
            harvester=harvester,
            flight=flight,
        )
        self.sessions = SessionTable(cache)
        self._on_secret = on_secret
        self._transport: Any = None

    @property
    def transport(self) -> Any:
        """The providers' curl transport of this loop, created on first use and closed with the app."""
        if self._transport is None:
            from providers import CurlTransport

            self._transport = CurlTransport()
        return self._transport

    def secrets_seen(self, value: str | None) -> None:
        """Register a secret from a request (a proxy password) with the log redaction."""
        if value and self._on_secret is not None and "@" in value:
            self._on_secret(value)

    async def read_json(self, request: web.Request) -> Any:
        """The request's JSON body, within the body size limit and the idle timeout.

        Raises:
            BadRequest: too large (413), not JSON (400), or the body stalled.
        """
        limit = self.limits.max_body
        if request.content_length is not None and request.content_length > limit:
            raise BadRequest(f"the request body is larger than {limit} bytes", 413)
        content = request.content
        try:
            if content.is_eof():
                # The whole body came with the head: nothing to wait for, no timer, no read loop.
                raw = content.read_nowait()
            else:
                async with asyncio.timeout(self.limits.idle_timeout):
                    raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raw = None
        except TimeoutError:
            raise BadRequest("the request body stalled") from None
        if raw is None or len(raw) > limit:  # a chunked body has no Content-Length to check first
            raise BadRequest(f"the request body is larger than {limit} bytes", 413)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"the request body is not valid JSON ({exc.msg} at byte {exc.pos})") from None

    async def aclose(self) -> None:
        """Cancel browser runs, close the browser and the transport."""
        await self.runs.aclose()
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None


# -- error shapes -------------------------------------------------------------------------------------------


def _api_of(path: str) -> str:
    if path == "/v1":
        return "flaresolverr"
    return "openai"


def error_response(
    path: str,
    status: int,
    message: str,
    *,
    code: str | None = None,
    version: str = "0",
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An error in the shape of the API ``path`` belongs to."""
    if _api_of(path) == "flaresolverr":
        from ._flaresolverr import error_body

        now = int(time.time() * 1000)
        body = error_body(message, now, version)
    else:
        kind = {
            400: "invalid_request_error",
            401: "authentication_error",
            403: "permission_error",
            404: "not_found_error",
            413: "invalid_request_error",
            429: "rate_limit_error",
            503: "overloaded_error",
            504: "timeout_error",
        }.get(status, "api_error")
        body = orjson.dumps({"error": {"message": message, "type": kind, "code": code}})
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)


# -- middleware ---------------------------------------------------------------------------------------------


def _route_name(request: web.Request) -> str:
    info = request.match_info
    resource = info.route.resource if info.route is not None else None
    return resource.canonical if resource is not None else "unmatched"


def bearer_ok(header: str, token: bytes) -> bool:
    """True when an ``Authorization`` header value is ``Bearer TOKEN`` (compared in constant time)."""
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token)


def make_middleware(state: ServeState) -> Any:
    """Auth, the request cap, error shapes and metrics, in one middleware (one frame per request)."""
    token = state.settings.token.encode() if state.settings.token else None
    open_without_token = state.settings.loopback or state.settings.no_auth
    gate = state.requests
    observe = state.metrics.observe
    version = state.version

    def authorized(request: web.Request) -> str | None:
        """None when the request may go on, else why not."""
        path = request.path
        if (request.method, path) in PUBLIC:
            return None
        if token is None:
            if path.startswith(_SECRET_PREFIX):
                return "these routes hand out session records: start the server with a token"
            return None if open_without_token else "a token is required"
        if not bearer_ok(request.headers.get("Authorization", ""), token):
            return "missing or wrong bearer token"
        return None

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            refusal = authorized(request)
            if refusal is not None:
                status = 401 if token is not None or not request.path.startswith(_SECRET_PREFIX) else 403
                return error_response(request.path, status, refusal, code="invalid_api_key", version=version)
            gate.enter()
            try:
                response = await handler(request)
            finally:
                gate.leave()
            status = response.status
            return response
        except Full as exc:
            status = 503
            return error_response(
                request.path,
                503,
                str(exc),
                code="overloaded",
                version=version,
                headers={"Retry-After": str(exc.retry_after)},
            )
        except BadRequest as exc:
            status = exc.status
            return error_response(request.path, exc.status, str(exc), code="invalid_request", version=version)
        except web.HTTPException as exc:
            status = exc.status
            if exc.status < 400:
                raise
            return error_response(
                request.path,
                exc.status,
                exc.reason,
                version=version,
                headers={k: v for k, v in exc.headers.items() if k == "Allow"},
            )
        except (asyncio.CancelledError, ConnectionResetError):
            status = 499  # the client went away
            raise
        except Exception:
            logger.exception("serve.internal_error route=%s", _route_name(request))
            status = 500
            return error_response(
                request.path, 500, "internal error in harvest serve (please report this)", version=version
            )
        finally:
            observe(_route_name(request), str(status), time.perf_counter() - started)

    return middleware


# -- the app and its lifecycle ------------------------------------------------------------------------------


def build_app(
    state: ServeState,
    *,
    status: Callable[[], Awaitable[dict[str, Any]]] | None = None,
    extra_metrics: Callable[[], bytes] | None = None,
    healthy: Callable[[], bool] | None = None,
) -> web.Application:
    """The aiohttp application over ``state``: FlareSolverr, the OpenAI gateway, sessions, health, metrics.

    The daemon passes ``status`` (served at ``/status``), its own metrics (served before the server's at
    ``/metrics``) and ``healthy`` (``/healthz`` answers 503 once it is false).
    """
    from ._flaresolverr import FlareSolverr
    from ._lane import FastLane
    from ._openai import Gateway
    from ._records import Records

    app = web.Application(middlewares=[make_middleware(state)], client_max_size=state.limits.max_body)
    flaresolverr = FlareSolverr(state)
    gateway = Gateway(state)
    records = Records(state)
    app[LANE] = FastLane(state, gateway)

    async def healthz(request: web.Request) -> web.Response:
        ok = healthy() if healthy is not None else True
        return web.json_response({"ok": ok}, status=200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        body = state.metrics.exposition()
        if extra_metrics is not None:
            body = extra_metrics() + body  # two registries with distinct names: one valid exposition
        response = web.Response(body=body)
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def status_handler(request: web.Request) -> web.Response:
        assert status is not None
        body = orjson.dumps(await status(), option=orjson.OPT_INDENT_2)
        return web.Response(body=body, content_type="application/json")

    router = app.router
    router.add_get("/", flaresolverr.index)
    router.add_get("/health", flaresolverr.health)
    router.add_get("/healthz", healthz)
    router.add_get("/metrics", metrics)
    if status is not None:
        router.add_get("/status", status_handler)
    router.add_post("/v1", flaresolverr.handle)
    router.add_get("/v1/models", gateway.models)
    router.add_post("/v1/chat/completions", gateway.chat)
    router.add_post("/v1/images/generations", gateway.images)
    router.add_get("/v1/sessions", records.list)
    router.add_get("/v1/sessions/{name}", records.get)
    router.add_post("/v1/sessions/{name}/refresh", records.refresh)

    async def close_state(app: web.Application) -> None:
        await gateway.aclose()
        await state.aclose()

    app.on_cleanup.append(close_state)
    return app


class ServeApp:
    """Runs the app on the settings' address: ``await start()``, then ``await stop()`` (drains, then closes)."""

    def __init__(self, state: ServeState, app: web.Application | None = None) -> None:
        self.state = state
        self.app = app if app is not None else build_app(state)
        self.host = state.settings.host
        self.port = state.settings.port
        self._runner: LimitedRunner | None = None

    async def start(self) -> None:
        """Bind and serve; ``self.port`` is the real port afterwards (useful with port 0)."""
        limits = self.state.limits
        # No access log: a line per request would cost more than a cached answer (the metrics count them).
        runner = LimitedRunner(
            self.app,
            limits,
            lane=self.app.get(LANE),
            access_log=None,
            handle_signals=False,
            shutdown_timeout=limits.drain_timeout,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, backlog=1024)
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

    @property
    def url(self) -> str:
        """``http://host:port``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to ``drain_timeout``), then close everything."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()


def daemon_server(
    listen: str,
    *,
    cache: AuthCache,
    config: Config | None,
    harvester: Any,
    flight: Any = None,
    status: Callable[[], Awaitable[dict[str, Any]]],
    metrics: Callable[[], bytes],
    healthy: Callable[[], bool],
) -> ServeApp:
    """The server the daemon runs on ``[daemon] listen``: this app, sharing the daemon's cache and browser,
    plus the daemon's ``/status``, metrics and health.

    Raises:
        ConfigError: a non-loopback address without a token (see ``ServeSettings.resolve``).
    """
    from harvester._config import Config as _Config

    config = config if config is not None else _Config()
    settings = ServeSettings.resolve(config, listen=listen)
    state = ServeState(settings, cache=cache, config=config, harvester=harvester, flight=flight)
    return ServeApp(state, build_app(state, status=status, extra_metrics=metrics, healthy=healthy))
