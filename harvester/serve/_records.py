"""``/v1/sessions``: the cache's records for other hosts. A token is required even on loopback (the app's
middleware enforces it), because ``GET /v1/sessions/{name}`` hands out a whole record, secrets included.

- ``GET /v1/sessions``: the ``harvest cache list --json`` view (no secrets);
- ``GET /v1/sessions/{name}``: exactly ``harvest cache get NAME --json``;
- ``POST /v1/sessions/{name}/refresh``: a single-flight harvest; answers the new record.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from cache._export import render
from harvester._exceptions import HarvestError, UnknownProviderError
from harvester.cli._cache import _summary as summary  # the `harvest cache list --json` view, from one place

from ._app import error_response
from ._limits import Full
from ._sessions import SessionNameError, record_name

if TYPE_CHECKING:
    from ._app import ServeState


class Records:
    """The ``/v1/sessions`` handlers."""

    def __init__(self, state: ServeState) -> None:
        self.state = state

    async def list(self, request: web.Request) -> web.Response:
        """Every record, summarised."""
        body = orjson.dumps([summary(r) for r in self.state.cache.list()], option=orjson.OPT_INDENT_2)
        return web.Response(body=body + b"\n", content_type="application/json")

    async def get(self, request: web.Request) -> web.Response:
        """One record, as ``harvest cache get NAME --json`` prints it."""
        name = request.match_info["name"]
        record = self.state.cache.get(name)
        if record is None:
            return error_response(request.path, 404, f"no cached session for {name!r}", code="not_found")
        return web.Response(text=render(record, "json"), content_type="application/json")

    async def refresh(self, request: web.Request) -> web.Response:
        """Harvest ``name`` again (joining a run already going on) and answer the new record."""
        from harvester._recipes import RECIPES

        raw = request.match_info["name"]
        try:
            name = record_name(raw)
        except SessionNameError as exc:
            return error_response(request.path, 400, str(exc), code="invalid_name")
        current = self.state.cache.get(name)
        session = self.state.sessions.get(name)
        proxy = session.proxy if session is not None else (current.proxy if current is not None else None)
        if name in RECIPES:
            provider, url = name, None
        elif current is not None and current.origin:
            provider, url = None, current.origin + "/"
        else:
            return error_response(
                request.path,
                404,
                f"{name!r} is neither a known provider nor a cached session with an origin",
                code="not_found",
            )
        try:
            record = (await self.state.runs.run(name, url=url, provider=provider, proxy=proxy, stale=current)).record
        except Full:
            raise
        except UnknownProviderError as exc:
            return error_response(request.path, 404, str(exc), code="not_found")
        except HarvestError as exc:
            return error_response(request.path, 502, str(exc), code=type(exc).__name__)
        return web.Response(text=render(record, "json"), content_type="application/json")
