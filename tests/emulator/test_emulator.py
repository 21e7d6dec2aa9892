"""Tests of the provider emulator itself, spoken to with a plain aiohttp client (no browser)."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import aiohttp
import orjson
import pytest

from tests.emulator import Emulator, EmulatorConfig, EmulatorThread
from tests.emulator._challenge import solve

from .conftest import HEADERS, UA

OTHER_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/140.0"
CHAT = {"messages": [{"role": "user", "content": "hi there"}], "stream": True, "max_tokens": 10, "x": 1}
OPENAI_ROUTES = [
    ("/v1/openai/chat/completions", "meta-llama/Meta-Llama-3.1-8B-Instruct"),
    ("/api/openai/v1/chat/completions", "gpt-4o-mini"),
]


def nonce_of(html: str) -> str:
    """The challenge nonce embedded in a challenge page."""
    match = re.search(r'"cNounce": "([0-9a-f]+)"', html)
    assert match, html
    return match.group(1)


async def clear(client: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    """Do what the page's JS does: fetch the challenge, solve it and post the answer."""
    async with client.get(url + "/") as resp:
        nonce = nonce_of(await resp.text())
    async with client.post(
        url + "/cdn-cgi/challenge-platform/answer", data=orjson.dumps({"nonce": nonce, "answer": solve(nonce)})
    ) as resp:
        await resp.read()
        return resp


async def cerebras_key(client: aiohttp.ClientSession, url: str) -> str:
    """The demo API key from the Cerebras session endpoint."""
    async with client.get(url + "/api/auth/session") as resp:
        assert resp.status == 200
        return (await resp.json())["user"]["demoApiKey"]


def sse_data(body: str) -> list[Any]:
    """The parsed `data:` payloads of an SSE body ("[DONE]" kept as a string)."""
    out: list[Any] = []
    for event in body.split("\n\n"):
        for line in event.splitlines():
            if line.startswith("data: "):
                payload = line[len("data: ") :]
                out.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return out


def content_of(events: list[Any]) -> str:
    """The concatenated `delta.content` of OpenAI chunks."""
    return "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events if isinstance(e, dict) and e["choices"]
    )


# -- challenge ---------------------------------------------------------------------------------------------


async def test_challenge_page_served_without_clearance(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """A first visit gets the 403 Cloudflare interstitial with its markers and headers."""
    async with client.get(emulator.url + "/chat") as resp:
        html = await resp.text()
        assert resp.status == 403
        assert resp.headers["cf-mitigated"] == "challenge"
        assert resp.headers["Server"] == "cloudflare"
    assert "<title>Just a moment...</title>" in html
    assert "window._cf_chl_opt = {" in html
    assert '<div id="challenge-running">' in html
    assert 'id="challenge-error"' in html
    assert "HeadlessChrome" in html and "navigator.webdriver" in html
    assert emulator.stats["challenge_pages"] == 1


async def test_answer_sets_httponly_clearance_and_unlocks_app(
    emulator: EmulatorThread, client: aiohttp.ClientSession
) -> None:
    """A right answer sets an HttpOnly, Lax, non-Secure cf_clearance; the app page then loads with __cf_bm."""
    resp = await clear(client, emulator.url)
    assert resp.status == 200
    header = resp.headers["Set-Cookie"]
    assert re.match(r"cf_clearance=[A-Za-z0-9_-]{43};", header)
    lowered = header.lower()
    assert "httponly" in lowered and "max-age=3600" in lowered and "path=/" in lowered
    assert "samesite=lax" in lowered and "secure" not in lowered
    async with client.get(emulator.url + "/") as page:
        html = await page.text()
        assert page.status == 200
        bm = page.headers["Set-Cookie"]
    assert "<title>Playground</title>" in html and '<div id="app"' in html and "_pg_visit=1" in html
    assert bm.startswith("__cf_bm=") and "httponly" not in bm.lower() and "Max-Age=1800" in bm
    assert emulator.stats["clearances_issued"] == 1
    assert emulator.stats["clearance_user_agent"] == UA


async def test_wrong_or_reused_answer_is_rejected(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """A wrong answer and a second use of a nonce both get 403 and no cookie."""
    async with client.get(emulator.url + "/") as resp:
        nonce = nonce_of(await resp.text())
    answer_url = emulator.url + "/cdn-cgi/challenge-platform/answer"
    async with client.post(answer_url, data=orjson.dumps({"nonce": nonce, "answer": solve(nonce) + 1})) as resp:
        assert resp.status == 403 and "Set-Cookie" not in resp.headers
    async with client.post(answer_url, data=orjson.dumps({"nonce": nonce, "answer": solve(nonce)})) as resp:
        assert resp.status == 403
    async with client.post(answer_url, data=b"nope") as resp:
        assert resp.status == 400
    assert emulator.stats["clearances_issued"] == 0


async def test_clearance_is_bound_to_user_agent(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """The same cookie sent with another User-Agent is treated as no clearance."""
    await clear(client, emulator.url)
    async with client.get(emulator.url + "/", headers={"User-Agent": OTHER_UA}) as resp:
        assert resp.status == 403
    async with client.get(emulator.url + "/") as resp:
        assert resp.status == 200


async def test_clearance_expires_after_ttl(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """A clearance stops working once `clearance_ttl` seconds have passed."""
    emulator.configure(clearance_ttl=0.3)
    resp = await clear(client, emulator.url)
    assert "Max-Age=1" in resp.headers["Set-Cookie"]
    async with client.get(emulator.url + "/") as page:
        assert page.status == 200
    await asyncio.sleep(0.4)
    # The browser would still send the cookie (Max-Age is rounded up), but the server no longer honours it.
    async with client.get(emulator.url + "/api/models") as page:
        assert page.status == 403


async def test_revoke_invalidates_clearances_and_keys(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """After `revoke` the old clearance is challenged and the old API key is refused."""
    await clear(client, emulator.url)
    key = await cerebras_key(client, emulator.url)
    emulator.revoke()
    async with client.get(emulator.url + "/api/models") as resp:
        assert resp.status == 403
    await clear(client, emulator.url)
    auth = {"Authorization": f"Bearer {key}"}
    async with client.post(emulator.url + "/v1/chat/completions", json=CHAT, headers=auth) as resp:
        assert resp.status == 401
    assert await cerebras_key(client, emulator.url) != key


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/models"),
        ("POST", "/api/inference"),
        ("GET", "/api/auth/session"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/models/featured"),
        ("POST", "/v1/openai/chat/completions"),
        ("POST", "/v1/inference/stabilityai/sd3.5"),
        ("POST", "/api/openai/v1/chat/completions"),
        ("GET", "/some/unknown/page"),
    ],
)
async def test_api_rejects_without_clearance(
    emulator: EmulatorThread, client: aiohttp.ClientSession, method: str, path: str
) -> None:
    """Every API route answers the challenge page until the client holds a clearance."""
    async with client.request(method, emulator.url + path, json=CHAT) as resp:
        assert resp.status == 403
        assert resp.headers["cf-mitigated"] == "challenge"
        assert "Just a moment..." in await resp.text()


async def test_require_clearance_off(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """With `require_clearance=False`, pages and APIs answer without any cookie."""
    emulator.configure(require_clearance=False)
    async with client.get(emulator.url + "/api/models") as resp:
        assert resp.status == 200
    async with client.get(emulator.url + "/") as resp:
        assert resp.status == 200
    key = await cerebras_key(client, emulator.url)
    assert key == await cerebras_key(client, emulator.url)


# -- providers ---------------------------------------------------------------------------------------------


async def test_cloudflare_models_and_data_stream(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """Cloudflare lists models by name/task and streams a Vercel AI data stream with e: and d: parts."""
    await clear(client, emulator.url)
    async with client.get(emulator.url + "/api/models") as resp:
        models = await resp.json()
    names = {m["name"] for m in models}
    assert {"@cf/meta/llama-3.1-8b-instruct-awq", "@cf/qwen/qwen2.5-coder-32b-instruct"} <= names
    assert {"@cf/deepseek-ai/deepseek-r1-distill-qwen-32b", "@cf/meta/llama-3.3-70b-instruct-fp8-fast"} <= names
    assert all(m["task"]["name"] == "Text Generation" and "description" in m for m in models)
    body = {**CHAT, "model": "@cf/meta/llama-3.3-70b-instruct-fp8-fast"}
    async with client.post(emulator.url + "/api/inference", json=body) as resp:
        assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
        lines = (await resp.text()).splitlines()
    text = "".join(orjson.loads(line[2:]) for line in lines if line.startswith("0:"))
    assert text == "Hello from the cloudflare emulator. You said: hi there"
    finish = orjson.loads(lines[-2][2:])
    assert lines[-2].startswith("e:") and lines[-1].startswith("d:")
    assert finish == {"finishReason": "stop", "usage": {"promptTokens": 2, "completionTokens": 9}, "isContinued": False}
    async with client.post(emulator.url + "/api/inference", json={**CHAT, "model": "@cf/nope"}) as resp:
        assert resp.status == 404


async def test_cerebras_session_key_and_stream(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """Cerebras hands out one remembered demo key and refuses chat without it."""
    await clear(client, emulator.url)
    async with client.get(emulator.url + "/api/auth/session") as resp:
        session = await resp.json()
    key = session["user"]["demoApiKey"]
    assert session["user"]["name"] == "demo" and key.startswith("csk-") and session["expires"].endswith("Z")
    assert await cerebras_key(client, emulator.url) == key
    url = emulator.url + "/v1/chat/completions"
    for auth in ({}, {"Authorization": "Bearer csk-wrong"}):
        async with client.post(url, json=CHAT, headers=auth) as resp:
            assert resp.status == 401
            assert await resp.json() == {"error": {"message": "Wrong API Key", "type": "invalid_request_error"}}
    body = {**CHAT, "model": "llama3.1-8b"}
    async with client.post(url, json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = sse_data(await resp.text())
    assert content_of(events) == "Hello from the cerebras emulator. You said: hi there"
    assert emulator.stats["session_requests"] == 2 and emulator.stats["api_keys_issued"] == 1


@pytest.mark.parametrize(("path", "model"), OPENAI_ROUTES)
async def test_openai_sse_shape(emulator: EmulatorThread, client: aiohttp.ClientSession, path: str, model: str) -> None:
    """OpenAI-style routes stream chat.completion.chunk events, a stop chunk with usage, then [DONE]."""
    await clear(client, emulator.url)
    async with client.post(emulator.url + path, json={**CHAT, "model": model}) as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        raw = await resp.text()
    assert raw.endswith("data: [DONE]\n\n")
    events = sse_data(raw)
    first, last = events[0], events[-2]
    assert first["object"] == "chat.completion.chunk" and first["id"].startswith("chatcmpl-")
    assert first["model"] == model and first["choices"][0]["delta"]["role"] == "assistant"
    assert first["choices"][0]["finish_reason"] is None
    assert last["choices"][0]["finish_reason"] == "stop"
    assert last["usage"] == {"prompt_tokens": 2, "completion_tokens": 9, "total_tokens": 11}
    assert content_of(events).endswith("emulator. You said: hi there")
    assert [e["choices"][0]["delta"]["content"] for e in events[:3]] == ["Hello ", "from ", "the "]


@pytest.mark.parametrize(("path", "model"), OPENAI_ROUTES)
async def test_openai_non_stream_and_unknown_model(
    emulator: EmulatorThread, client: aiohttp.ClientSession, path: str, model: str
) -> None:
    """`stream: false` answers one chat.completion object; an unknown model answers 404."""
    await clear(client, emulator.url)
    async with client.post(emulator.url + path, json={**CHAT, "model": model, "stream": False}) as resp:
        completion = await resp.json()
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"].endswith("You said: hi there")
    assert completion["usage"]["total_tokens"] == 11
    async with client.post(emulator.url + path, json={**CHAT, "model": "no-such-model"}) as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["message"] == "model not found"


async def test_reasoning_models_think_first(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """Models with r1 in the name send two reasoning_content chunks before the content."""
    await clear(client, emulator.url)
    body = {**CHAT, "model": "deepseek-ai/DeepSeek-R1"}
    async with client.post(emulator.url + "/v1/openai/chat/completions", json=body) as resp:
        events = sse_data(await resp.text())
    deltas = [e["choices"][0]["delta"] for e in events[:3]]
    assert "reasoning_content" in deltas[0] and "reasoning_content" in deltas[1]
    assert deltas[2]["content"] == "Hello "


async def test_deepinfra_featured_and_images(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """DeepInfra lists featured models, returns sd3.5 images inline and FLUX images as fetchable URLs."""
    await clear(client, emulator.url)
    async with client.get(emulator.url + "/models/featured") as resp:
        featured = {m["model_name"]: m for m in await resp.json()}
    assert featured["Qwen/Qwen2.5-72B-Instruct"]["type"] == "text-generation"
    assert featured["stabilityai/sd3.5"]["type"] == "text-to-image"
    assert featured["black-forest-labs/FLUX-1-schnell"]["type"] != "text-to-image"
    assert featured["black-forest-labs/FLUX-1-schnell"]["reported_type"] == "text-to-image"
    async with client.post(emulator.url + "/v1/inference/stabilityai/sd3.5", json={"prompt": "a cat"}) as resp:
        image = (await resp.json())["images"][0]
    assert image.startswith("data:image/png;base64,")
    assert base64.b64decode(image.split(",", 1)[1]).startswith(b"\x89PNG\r\n\x1a\n")
    body = {"input": {"prompt": "a dog"}}
    async with client.post(emulator.url + "/v1/inference/black-forest-labs/FLUX-1-schnell", json=body) as resp:
        url = (await resp.json())["output"][0]
    assert url.startswith(emulator.url + "/static/img/") and url.endswith(".png")
    async with aiohttp.ClientSession() as anonymous, anonymous.get(url) as resp:
        assert resp.status == 200 and resp.content_type == "image/png"
        assert (await resp.read()).startswith(b"\x89PNG")
    async with client.post(emulator.url + "/v1/inference/nobody/nothing", json={"prompt": "x"}) as resp:
        assert resp.status == 404


async def test_stream_chunks_exact_and_fast(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """`stream_chunks` sends exactly N chunks of `chunk_text`, and 20,000 of them stream in well under 2 s."""
    await clear(client, emulator.url)
    emulator.configure(stream_chunks=5, chunk_text="ab ")
    body = {**CHAT, "model": "gpt-4"}
    async with client.post(emulator.url + "/api/openai/v1/chat/completions", json=body) as resp:
        assert content_of(sse_data(await resp.text())) == "ab " * 5
    emulator.configure(stream_chunks=20_000, chunk_text="tok ")
    started = time.perf_counter()
    async with client.post(emulator.url + "/api/openai/v1/chat/completions", json=body) as resp:
        raw = await resp.read()
    assert raw.count(b'"content":"tok "') == 20_000
    assert time.perf_counter() - started < 2.0


# -- faults ------------------------------------------------------------------------------------------------


async def test_fail_next_then_recover(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """`fail_next=2, fail_status=502` fails exactly the next two API calls, then serves normally."""
    await clear(client, emulator.url)
    emulator.configure(fail_next=2, fail_status=502)
    statuses = []
    for _ in range(3):
        async with client.get(emulator.url + "/api/models") as resp:
            statuses.append(resp.status)
            if resp.status == 502:
                assert "error" in await resp.json()
    assert statuses == [502, 502, 200]
    assert emulator.config.fail_next == 0 and emulator.stats["faults_injected"] == 2


async def test_rate_limit_next_sets_retry_after(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """`rate_limit_next` answers 429 with the configured Retry-After."""
    await clear(client, emulator.url)
    emulator.configure(rate_limit_next=1, retry_after=2)
    async with client.get(emulator.url + "/models/featured") as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "2"
    async with client.get(emulator.url + "/models/featured") as resp:
        assert resp.status == 200


async def test_faults_skip_session_endpoint(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """API faults and challenge_api leave the harvester's session endpoint alone."""
    await clear(client, emulator.url)
    emulator.configure(fail_next=1, challenge_api=True)
    await cerebras_key(client, emulator.url)
    assert emulator.config.fail_next == 1


async def test_cut_stream_truncates_body(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """`cut_stream` sends a partial event and drops the connection, so the client sees an incomplete body."""
    await clear(client, emulator.url)
    emulator.configure(cut_stream=True, stream_chunks=10)
    body = {**CHAT, "model": "gpt-4"}
    async with client.post(emulator.url + "/api/openai/v1/chat/completions", json=body) as resp:
        received = b""
        with pytest.raises(aiohttp.ClientPayloadError):
            async for chunk in resp.content.iter_any():
                received += chunk
    assert b"[DONE]" not in received and received.count(b"data: ") >= 2
    assert not received.endswith(b"\n\n")


async def test_cut_data_stream_truncates_body(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """`cut_stream` also truncates the Cloudflare data stream before its finish parts."""
    await clear(client, emulator.url)
    emulator.configure(cut_stream=True)
    async with client.post(emulator.url + "/api/inference", json=CHAT) as resp:
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()


async def test_malformed_and_error_events(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """`malformed_event` and `error_event` splice bad events mid-stream, which then finishes with [DONE]."""
    await clear(client, emulator.url)
    emulator.configure(malformed_event=True, error_event=True)
    body = {**CHAT, "model": "gpt-4"}
    async with client.post(emulator.url + "/api/openai/v1/chat/completions", json=body) as resp:
        raw = await resp.text()
    assert 'data: {"choices": [{"delta": {"content": \n\n' in raw
    assert 'event: error\ndata: {"error":{"message":"upstream overloaded"}}\n\n' in raw
    assert raw.index("upstream overloaded") < raw.index('"finish_reason":"stop"')
    assert raw.endswith("data: [DONE]\n\n")
    async with client.post(emulator.url + "/api/inference", json=CHAT) as resp:
        lines = (await resp.text()).splitlines()
    assert '3:"upstream overloaded"' in lines and '0:"unterminated' in lines and lines[-1].startswith("d:")


async def test_drip_ms_slows_the_stream(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """`drip_ms` sleeps between events, so a stream of N events takes about N * drip_ms."""
    await clear(client, emulator.url)
    emulator.configure(drip_ms=20, stream_chunks=5)
    started = time.perf_counter()
    async with client.post(emulator.url + "/api/openai/v1/chat/completions", json={**CHAT, "model": "gpt-4"}) as resp:
        first = await resp.content.readuntil(b"\n\n")
        assert first.startswith(b"data: ")
        await resp.read()
    assert time.perf_counter() - started >= 0.1


async def test_challenge_api_despite_clearance(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """`challenge_api` challenges API calls but not pages, even with a valid clearance."""
    await clear(client, emulator.url)
    emulator.configure(challenge_api=True)
    async with client.get(emulator.url + "/api/models") as resp:
        assert resp.status == 403 and resp.headers["cf-mitigated"] == "challenge"
    async with client.get(emulator.url + "/") as resp:
        assert resp.status == 200


# -- variants ----------------------------------------------------------------------------------------------


async def test_blocked_variant(emulator_factory: Any, client: aiohttp.ClientSession) -> None:
    """The blocked variant answers Error 1020 to pages, APIs and the answer endpoint."""
    emu = emulator_factory(variant="blocked")
    for method, path in [("GET", "/"), ("GET", "/api/models"), ("POST", "/cdn-cgi/challenge-platform/answer")]:
        async with client.request(method, emu.url + path) as resp:
            html = await resp.text()
            assert resp.status == 403 and "cf-mitigated" not in resp.headers
        assert "<title>Access denied | 127.0.0.1 used Cloudflare to restrict access</title>" in html
        assert '<div id="cf-error-details">' in html and "Access denied" in html and "Error 1020" in html
    assert emu.stats["blocked_pages"] == 3


async def test_interactive_variant_has_widget(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """The interactive variant adds the Turnstile widget and only posts on a trusted click."""
    emulator.configure(variant="interactive")
    async with client.get(emulator.url + "/") as resp:
        html = await resp.text()
    assert '<div class="cf-turnstile" id="cf-turnstile"' in html
    assert '<input type="checkbox" id="cf-turnstile-checkbox">' in html
    assert "ev.isTrusted === true" in html and '"cInteractive": true' in html


async def test_login_required_variant(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """The session is empty until POST /login sets authjs.session-token; then it carries the key."""
    emulator.configure(variant="login-required")
    await clear(client, emulator.url)
    async with client.get(emulator.url + "/api/auth/session") as resp:
        assert await resp.json() == {}
    async with client.get(emulator.url + "/login") as resp:
        assert 'name="username"' in await resp.text()
    async with client.post(emulator.url + "/login", data={"username": "", "password": "x"}) as resp:
        assert resp.status == 400
    login = {"username": "alice", "password": "pw"}
    async with client.post(emulator.url + "/login", data=login, allow_redirects=False) as resp:
        assert resp.status == 302 and resp.headers["Location"] == "/"
        assert "authjs.session-token=" in resp.headers["Set-Cookie"]
        assert "httponly" in resp.headers["Set-Cookie"].lower()
    async with client.get(emulator.url + "/api/auth/session") as resp:
        session = await resp.json()
    assert session["user"]["name"] == "alice" and session["user"]["demoApiKey"].startswith("csk-")


# -- control plane -----------------------------------------------------------------------------------------


async def test_http_control_plane(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """Knobs, revoke, reset and stats work over HTTP, ungated, and bad knobs get 400."""
    async with client.post(emulator.url + "/__emulator__/config", json={"fail_next": 1, "think_ms": 5}) as resp:
        assert resp.status == 200 and (await resp.json())["think_ms"] == 5.0
    assert emulator.config.fail_next == 1
    async with client.post(emulator.url + "/__emulator__/config", json={"bogus": 1}) as resp:
        assert resp.status == 400 and "bogus" in (await resp.json())["error"]["message"]
    async with client.post(emulator.url + "/__emulator__/config", json={"variant": "weird"}) as resp:
        assert resp.status == 400
    await clear(client, emulator.url)
    async with client.post(emulator.url + "/__emulator__/revoke") as resp:
        assert resp.status == 200
    async with client.get(emulator.url + "/") as resp:
        assert resp.status == 403
    async with client.post(emulator.url + "/__emulator__/reset") as resp:
        assert resp.status == 200
    async with client.get(emulator.url + "/__emulator__/stats") as resp:
        stats = await resp.json()
    assert stats["clearances_issued"] == 0 and stats["challenge_pages"] == 0
    async with client.get(emulator.url + "/__emulator__/config") as resp:
        assert (await resp.json()) == EmulatorConfig().to_json()


async def test_stats_keep_last_api_headers(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """Stats count API requests per path and keep the last one's headers with lower-case names."""
    await clear(client, emulator.url)
    for _ in range(2):
        async with client.get(emulator.url + "/api/models") as resp:
            await resp.read()
    stats = emulator.stats
    assert stats["api_requests"] == {"/api/models": 2} and stats["api_requests_total"] == 2
    assert stats["last_user_agent"] == UA
    assert stats["last_headers"]["sec-ch-ua"] == HEADERS["sec-ch-ua"]
    assert "cf_clearance=" in stats["last_headers"]["cookie"]


def test_configure_rejects_unknown_knobs(emulator: EmulatorThread) -> None:
    """`configure` raises ValueError on an unknown knob or a bad value and changes nothing."""
    with pytest.raises(ValueError, match="bogus"):
        emulator.configure(bogus=1, fail_next=3)
    with pytest.raises(ValueError):
        emulator.configure(fail_next=-1)
    assert emulator.config == EmulatorConfig()
    emulator.configure(stream_chunks=3, cut_stream="true")
    assert emulator.config.stream_chunks == 3 and emulator.config.cut_stream is True
    emulator.reset()
    assert emulator.config == EmulatorConfig()


async def test_async_context_manager_on_current_loop(client: aiohttp.ClientSession) -> None:
    """`async with Emulator(config)` serves on the running loop and stops cleanly."""
    async with Emulator(EmulatorConfig(require_clearance=False)) as emu:
        async with client.get(emu.url + "/api/models") as resp:
            assert resp.status == 200
    with pytest.raises(RuntimeError):
        _ = emu.url


def test_cli_prints_url_and_exits_on_sigterm() -> None:
    """`python -m tests.emulator --port 0` prints its URL first and exits 0 on SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator", "--port", "0", "--variant", "blocked", "--think-ms", "10"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", line)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_stop_mid_stream_is_quick_and_clean(emulator_factory: Any) -> None:
    """Stopping the thread while a dripping stream is in flight finishes within a second or so."""
    emu = emulator_factory(require_clearance=False, drip_ms=50, stream_chunks=1000)

    async def stream_then_stop() -> float:
        async with aiohttp.ClientSession() as session:
            body = {"model": "gpt-4", "stream": True}
            async with session.post(emu.url + "/api/openai/v1/chat/completions", json=body) as resp:
                await resp.content.readuntil(b"\n\n")
                started = time.perf_counter()
                await asyncio.to_thread(emu.stop)
                elapsed = time.perf_counter() - started
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()
        return elapsed

    assert asyncio.run(stream_then_stop()) < 1.5


CHROMIUM = "/usr/lib/chromium/chromium"


@pytest.mark.slow
@pytest.mark.parametrize(("user_agent", "title"), [(UA, "Playground"), (None, "Just a moment...")])
def test_real_headless_chromium(emulator: EmulatorThread, tmp_path: Any, user_agent: str | None, title: str) -> None:
    """Headless Chromium with a normal UA clears the challenge; with its default HeadlessChrome UA it is refused."""
    emulator.configure(think_ms=50)
    args = [CHROMIUM, "--headless=new", "--no-sandbox", "--no-first-run", "--disable-background-networking"]
    args += ["--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]
    args += [f"--user-agent={user_agent}"] if user_agent else []
    args += ["--dump-dom", "--virtual-time-budget=3000", emulator.url + "/"]
    dom = subprocess.run(args, capture_output=True, timeout=60, check=False).stdout.decode()
    assert f"<title>{title}</title>" in dom
    assert emulator.stats["clearances_issued"] == (1 if user_agent else 0)
    if not user_agent:
        assert "refused: HeadlessChrome" in dom
