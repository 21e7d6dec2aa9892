"""``harvest serve``: the cached sessions over HTTP, as a FlareSolverr-compatible ``POST /v1`` and an
OpenAI-compatible gateway, plus ``/v1/sessions`` for other hosts.

>>> settings = ServeSettings.resolve(load_config(), listen="127.0.0.1:8191")
>>> server = ServeApp(ServeState(settings, cache=AuthCache.open(), config=config))
>>> await server.start(); ...; await server.stop()

Modules: ``_app`` (state, middleware, lifecycle), ``_limits`` (caps and timeouts), ``_settings``,
``_flaresolverr`` (``/v1``), ``_fetch`` (a page with a record's identity), ``_runs`` (single-flight browser runs),
``_sessions`` (FlareSolverr sessions), ``_openai`` (the gateway), ``_lane`` (its fast lane for streamed
completions), ``_events`` (an SSE stream on the connection), ``_records`` (``/v1/sessions``), ``_metrics``.
"""

from __future__ import annotations

from ._app import ServeApp, ServeState, build_app, daemon_server
from ._limits import Limits
from ._metrics import ServeMetrics
from ._settings import ServeSettings, is_loopback, parse_listen

__all__ = [
    "Limits",
    "ServeApp",
    "ServeMetrics",
    "ServeSettings",
    "ServeState",
    "build_app",
    "daemon_server",
    "is_loopback",
    "parse_listen",
]
