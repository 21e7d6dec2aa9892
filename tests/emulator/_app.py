"""The aiohttp routes: a Cloudflare-style gate in front of four fake AI providers on one origin.

Every page and API route goes through `_gate` (block page, challenge, `challenge_api`) and API routes then
through `_fault` (`fail_next`, `rate_limit_next`); bodies come from `_streams`, pages from `_challenge`.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from . import _agent as agent
from . import _catalog as catalog
from . import _challenge as pages
from . import _streams as streams
from ._state import EmulatorConfig, State

STATE_KEY = web.AppKey("emulator_state", State)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# One aiohttp write per this many events: per-write overhead dominates small SSE events.
_BATCH = 64


def create_app(state: State) -> web.Application:
    """Build the application; all routes share `state`."""
    app = web.Application()
    app[STATE_KEY] = state
    app.on_response_prepare.append(_cloudflare_headers)
    r = app.router
    # Control plane: never gated, so tests can always reach it.
    r.add_get("/__emulator__/config", _get_config)
    r.add_post("/__emulator__/config", _post_config)
    r.add_post("/__emulator__/reset", _reset)
    r.add_post("/__emulator__/revoke", _revoke)
    r.add_get("/__emulator__/stats", _stats)
    # Test-only: a test plays the person at a visible browser (see `_challenge`); pages poll the GETs.
    r.add_post("/__emulator__/person/solve", _person_solve)
    r.add_get("/__emulator__/person/solve", _person_solved)
    r.add_post("/__emulator__/person/sign-in", _person_sign_in)
    r.add_get("/__emulator__/person/sign-in", _person_signing_in)
    r.add_get("/__emulator__/person/idp", _person_idp)
    r.add_get("/favicon.ico", _favicon)
    r.add_get(r"/static/img/{image_id:[0-9a-f]+}.png", _static_image)
    r.add_post("/cdn-cgi/challenge-platform/answer", _answer)
    for path in ("/", "/chat", "/playground"):
        r.add_get(path, _page(_app_page))
    r.add_get("/login", _page(_login_form))
    r.add_post("/login", _page(_login_submit))
    r.add_get("/api/auth/session", _page(_session))
    # Cloudflare AI playground.
    r.add_get("/api/models", _api(_cloudflare_models))
    r.add_post("/api/inference", _api(_cloudflare_inference))
    r.add_get("/agents/playground/{agent_id}", _api(_cloudflare_agent, stat_path="/agents/playground"))
    # Cerebras.
    r.add_get("/v1/models", _api(_cerebras_models))
    r.add_post("/v1/chat/completions", _api(_cerebras_chat))
    # DeepInfra.
    r.add_get("/models/featured", _api(_deepinfra_featured))
    r.add_post("/v1/openai/chat/completions", _api(_deepinfra_chat))
    r.add_post("/v1/inference/{model:.*}", _api(_deepinfra_inference))
    # FreeNetfly.
    r.add_post("/api/openai/v1/chat/completions", _api(_freenetfly_chat))
    # Anything else is still behind the gate, as on a real Cloudflare zone.
    r.add_route("*", "/{tail:.*}", _page(_not_found))
    return app


# -- the gate ----------------------------------------------------------------------------------------------


async def _cloudflare_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every response looks like it passed through Cloudflare."""
    response.headers["Server"] = "cloudflare"
    response.headers.setdefault("cf-ray", _ray())


def _ray() -> str:
    return secrets.token_hex(8) + "-LOC"


def has_clearance(request: web.Request, state: State) -> bool:
    """True if the request carries a live `cf_clearance` issued to its own User-Agent."""
    return state.clearance_valid(request.cookies.get("cf_clearance"), request.headers.get("User-Agent", ""))


def _challenge(request: web.Request, state: State, cfg: EmulatorConfig) -> web.Response:
    """The 403 JS interstitial with a fresh nonce."""
    ray = _ray()
    interactive = cfg.variant == "interactive"
    body = pages.challenge_page(state.new_nonce(interactive=interactive), ray, cfg.think_ms, interactive=interactive)
    return web.Response(
        status=403,
        text=body,
        content_type="text/html",
        headers={"cf-mitigated": "challenge", "cf-ray": ray, "Cache-Control": "private, no-store, max-age=0"},
    )


def _blocked(state: State) -> web.Response:
    """The 403 Error 1020 page."""
    state.bump("blocked_pages")
    ray = _ray()
    return web.Response(status=403, text=pages.blocked_page(ray), content_type="text/html", headers={"cf-ray": ray})


def _gate(request: web.Request, state: State, *, api: bool) -> web.Response | None:
    """The response Cloudflare would send instead of the origin's, or None to let the request through."""
    cfg = state.config
    if cfg.variant == "blocked":
        return _blocked(state)
    if cfg.require_clearance and not has_clearance(request, state):
        return _challenge(request, state, cfg)
    if api and cfg.challenge_api:
        return _challenge(request, state, cfg)
    return None


def _page(handler: Handler) -> Handler:
    """Wrap a page (or the session endpoint): gated, but no API faults."""

    async def gated(request: web.Request) -> web.StreamResponse:
        blocked = _gate(request, request.app[STATE_KEY], api=False)
        return blocked if blocked is not None else await handler(request)

    return gated


def _api(handler: Handler, stat_path: str | None = None) -> Handler:
    """Wrap an API route: counted (under `stat_path` if given), gated, then subject to `fail_next` / `rate_limit_next`."""

    async def gated(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE_KEY]
        state.record_api_request(stat_path or request.path, request.headers)
        blocked = _gate(request, state, api=True)
        if blocked is not None:
            return blocked
        fault = state.take_fault()
        if fault is not None:
            kind, cfg = fault
            if kind == "fail":
                message = {"message": f"emulated failure ({cfg.fail_status})", "type": "server_error"}
                return json_response({"error": message}, status=cfg.fail_status)
            message = {"message": "Rate limit exceeded, slow down", "type": "rate_limit_error"}
            return json_response({"error": message}, status=429, headers={"Retry-After": f"{cfg.retry_after:g}"})
        return await handler(request)

    return gated


# -- helpers -----------------------------------------------------------------------------------------------


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response serialized with orjson."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json", headers=headers)


def _model_not_found(model: str) -> web.Response:
    return json_response({"error": {"message": "model not found", "model": model}}, status=404)


async def _json_body(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's JSON object, or a 400 response saying why not."""
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        return json_response({"error": {"message": "body is not valid JSON"}}, status=400)
    if not isinstance(body, dict):
        return json_response({"error": {"message": "body must be a JSON object"}}, status=400)
    return body


async def _write_plan(request: web.Request, plan: streams.StreamPlan, content_type: str) -> web.StreamResponse:
    """Write a pre-built stream: batched, or one event per `drip_ms`; cut it short if the plan says so."""
    cfg = request.app[STATE_KEY].config
    headers = {"Content-Type": content_type, "Cache-Control": "no-cache"}
    if content_type.startswith("text/plain"):
        headers["x-vercel-ai-data-stream"] = "v1"
    response = web.StreamResponse(status=200, headers=headers)
    await response.prepare(request)
    try:
        if cfg.drip_ms > 0:
            for event in plan.events:
                await response.write(event)
                await asyncio.sleep(cfg.drip_ms / 1000)
        else:
            events = plan.events
            for start in range(0, len(events), _BATCH):
                await response.write(b"".join(events[start : start + _BATCH]))
        if plan.cut_tail is not None:
            await response.write(plan.cut_tail)
            # Closing the socket without the chunked terminator is what a dropped upstream looks like;
            # aiohttp's own write_eof then fails with ConnectionError, which it treats as a client disconnect.
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
    except ConnectionError:  # the client went away early (aiohttp: "Connection lost")
        pass  # the client went away mid-stream (benchmarks cancel on purpose)
    return response


def _chat_reply(provider: str, body: dict[str, Any], cfg: EmulatorConfig) -> tuple[list[str], int]:
    """The reply tokens and the prompt size for a chat body."""
    messages = body.get("messages")
    return streams.reply_tokens(provider, messages, cfg), streams.prompt_tokens(messages)


async def _openai_chat(request: web.Request, provider: str, models: set[str] | list[str]) -> web.StreamResponse:
    """The shared OpenAI-style chat completion: SSE when `stream` is true, else one JSON object."""
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    model = str(body.get("model") or next(iter(models)))
    if model not in models:
        return _model_not_found(model)
    cfg = request.app[STATE_KEY].config
    tokens, prompt = _chat_reply(provider, body, cfg)
    if body.get("stream"):
        return await _write_plan(request, streams.openai_stream(model, tokens, prompt, cfg), "text/event-stream")
    return json_response(streams.openai_completion(model, tokens, prompt))


# -- control plane -----------------------------------------------------------------------------------------


async def _get_config(request: web.Request) -> web.Response:
    return json_response(request.app[STATE_KEY].config.to_json())


async def _post_config(request: web.Request) -> web.Response:
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    try:
        cfg = request.app[STATE_KEY].configure(body)
    except ValueError as exc:
        return json_response({"error": {"message": str(exc)}}, status=400)
    return json_response(cfg.to_json())


async def _reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return json_response({"ok": True})


async def _revoke(request: web.Request) -> web.Response:
    request.app[STATE_KEY].revoke()
    return json_response({"ok": True})


async def _stats(request: web.Request) -> web.Response:
    return json_response(request.app[STATE_KEY].stats())


async def _person_solve(request: web.Request) -> web.Response:
    return json_response({"solved": request.app[STATE_KEY].person_solve()})


async def _person_solved(request: web.Request) -> web.Response:
    return json_response({"solved": request.app[STATE_KEY].person_solved(request.query.get("nonce", ""))})


async def _person_sign_in(request: web.Request) -> web.Response:
    body = await _json_body(request) if request.can_read_body else {}
    if isinstance(body, web.Response):
        return body
    username = body.get("username", "person")
    if not isinstance(username, str) or not username.strip():
        return json_response({"error": {"message": "username must be a non-empty string"}}, status=400)
    request.app[STATE_KEY].person_sign_in(username.strip())
    return json_response({"ok": True})


async def _person_signing_in(request: web.Request) -> web.Response:
    return json_response({"username": request.app[STATE_KEY].person_signing_in()})


async def _person_idp(request: web.Request) -> web.Response:
    # Ungated like every control route: it stands for another site (the identity provider).
    next_url = request.query.get("next", "")
    if not next_url.startswith(("http://", "https://")):
        return json_response({"error": {"message": "next must be an http(s) URL"}}, status=400)
    return web.Response(text=pages.idp_page(next_url), content_type="text/html")


async def _favicon(request: web.Request) -> web.Response:
    # Browsers ask for it on every load; answering 204 ungated keeps challenge counters meaningful.
    return web.Response(status=204)


async def _static_image(request: web.Request) -> web.Response:
    # Generated images live on a CDN without the challenge in real life, so this route is ungated.
    if not request.app[STATE_KEY].has_image(request.match_info["image_id"]):
        return json_response({"error": {"message": "image not found"}}, status=404)
    return web.Response(body=catalog.PNG, content_type="image/png")


# -- challenge and pages -----------------------------------------------------------------------------------


async def _answer(request: web.Request) -> web.Response:
    """Check a challenge answer; on success set `cf_clearance` bound to the answering User-Agent."""
    state = request.app[STATE_KEY]
    cfg = state.config
    if cfg.variant == "blocked":
        return _blocked(state)
    try:
        body = orjson.loads(await request.read())
        nonce, answer = str(body["nonce"]), int(body["answer"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return json_response({"success": False, "error": "malformed answer"}, status=400)
    if not state.take_nonce(nonce) or answer != pages.solve(nonce):
        return json_response({"success": False, "error": "wrong or stale answer"}, status=403)
    token = state.issue_clearance(request.headers.get("User-Agent", ""))
    response = json_response({"success": True})
    response.set_cookie(
        "cf_clearance",
        token,
        max_age=max(1, math.ceil(cfg.clearance_ttl)),
        path="/",
        httponly=True,
        samesite="Lax",
    )
    return response


def _awaits_sign_in(request: web.Request) -> bool:
    """Whether this page should wait for a person to sign in (login-required, nobody signed in yet)."""
    state = request.app[STATE_KEY]
    return state.config.variant == "login-required" and (
        state.login_user(request.cookies.get("authjs.session-token")) is None
    )


async def _app_page(request: web.Request) -> web.Response:
    body = pages.app_page(request.path, awaits_sign_in=_awaits_sign_in(request))
    response = web.Response(text=body, content_type="text/html")
    response.set_cookie("__cf_bm", secrets.token_urlsafe(32), max_age=1800, path="/")
    return response


async def _login_form(request: web.Request) -> web.Response:
    return web.Response(text=pages.login_page(awaits_sign_in=_awaits_sign_in(request)), content_type="text/html")


async def _login_submit(request: web.Request) -> web.Response:
    form = await request.post()
    username = str(form.get("username", "")).strip()
    if not username:
        return web.Response(status=400, text=pages.login_page("Enter a username."), content_type="text/html")
    response = web.Response(status=302, headers={"Location": "/"})
    token = request.app[STATE_KEY].login(username)
    response.set_cookie("authjs.session-token", token, path="/", httponly=True, samesite="Lax")
    return response


async def _not_found(request: web.Request) -> web.Response:
    return web.Response(status=404, text="Not Found")


async def _session(request: web.Request) -> web.Response:
    """Cerebras' next-auth session: a demo API key per clearance holder, or `{}` before login."""
    state = request.app[STATE_KEY]
    user = state.login_user(request.cookies.get("authjs.session-token"))
    if state.config.variant == "login-required" and user is None:
        state.count_session_request()
        return json_response({})
    holder = request.cookies.get("cf_clearance") or "anonymous:" + request.headers.get("User-Agent", "")
    key = state.api_key_for(holder)
    expires = (datetime.now(UTC) + timedelta(days=30)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    name = user or "demo"
    return json_response(
        {"user": {"name": name, "email": f"{name}@example.test", "demoApiKey": key}, "expires": expires}
    )


# -- providers ---------------------------------------------------------------------------------------------


async def _cloudflare_models(request: web.Request) -> web.Response:
    return json_response(catalog.CLOUDFLARE_MODELS)


async def _cloudflare_inference(request: web.Request) -> web.StreamResponse:
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    names = [m["name"] for m in catalog.CLOUDFLARE_MODELS]
    model = str(body.get("model") or names[0])
    if model not in names:
        return _model_not_found(model)
    cfg = request.app[STATE_KEY].config
    tokens, prompt = _chat_reply("cloudflare", body, cfg)
    return await _write_plan(request, streams.data_stream(tokens, prompt, cfg), "text/plain; charset=utf-8")


async def _cloudflare_agent(request: web.Request) -> web.StreamResponse:
    return await agent.serve_agent(request, request.app[STATE_KEY])


async def _cerebras_models(request: web.Request) -> web.Response:
    data = [{"id": m, "object": "model", "owned_by": "Cerebras"} for m in catalog.CEREBRAS_MODELS]
    return json_response({"object": "list", "data": data})


async def _cerebras_chat(request: web.Request) -> web.StreamResponse:
    auth = request.headers.get("Authorization", "")
    key = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
    if not request.app[STATE_KEY].api_key_valid(key):
        return json_response({"error": {"message": "Wrong API Key", "type": "invalid_request_error"}}, status=401)
    return await _openai_chat(request, "cerebras", catalog.CEREBRAS_MODELS)


async def _deepinfra_featured(request: web.Request) -> web.Response:
    return json_response(catalog.DEEPINFRA_FEATURED)


async def _deepinfra_chat(request: web.Request) -> web.StreamResponse:
    return await _openai_chat(request, "deepinfra", [m for m in _deepinfra_order() if m in catalog.DEEPINFRA_TEXT])


def _deepinfra_order() -> list[str]:
    return [m["model_name"] for m in catalog.DEEPINFRA_FEATURED]


async def _deepinfra_inference(request: web.Request) -> web.Response:
    """DeepInfra's native endpoint: images for image models (inline or by URL), text for the rest."""
    model = request.match_info["model"]
    body = await _json_body(request)
    if isinstance(body, web.Response):
        return body
    nested = body.get("input")
    prompt = body.get("prompt") or (nested.get("prompt") if isinstance(nested, dict) else None) or ""
    status = {"status": "succeeded", "runtime_ms": 1}
    if model in catalog.INLINE_IMAGE_MODELS:
        return json_response({"images": [catalog.PNG_DATA_URL], "inference_status": status})
    if model in catalog.DEEPINFRA_IMAGES:
        image_id = request.app[STATE_KEY].add_image()
        url = f"{request.scheme}://{request.host}/static/img/{image_id}.png"
        return json_response({"output": [url], "inference_status": status})
    if model in catalog.DEEPINFRA_TEXT:
        text = f"Hello from the deepinfra emulator. You said: {prompt}"
        return json_response({"results": [{"generated_text": text}], "inference_status": status})
    return _model_not_found(model)


async def _freenetfly_chat(request: web.Request) -> web.StreamResponse:
    return await _openai_chat(request, "freenetfly", catalog.FREENETFLY_MODELS)
