"""Local provider emulator: four AI providers behind a Cloudflare-style JS challenge, on one loopback origin.

Test and demo infrastructure (not an installed package). Used by the tests, `scripts/demo` and the benchmarks.

Running it
==========
- CLI: ``python -m tests.emulator --port 0 [--host 127.0.0.1] [--think-ms 300]
  [--variant normal|blocked|interactive|login-required] [--clearance-ttl 3600]`` prints the base URL
  (``http://127.0.0.1:PORT``) as the first stdout line, flushed, and serves until SIGTERM/SIGINT (exit 0).
- Async: ``async with Emulator(EmulatorConfig(think_ms=50)) as emu: emu.url``.
- Thread: ``with EmulatorThread(config) as emu: ...`` runs it on its own loop (sync or async callers).
- Pytest (``tests/emulator/fixtures.py``): ``emulator`` is a fresh ``EmulatorThread`` per test;
  ``emulator_factory(**knobs)`` starts more, with start-up knobs (``reset`` returns to those).
  All of them offer ``.url``, ``.configure(**knobs)``, ``.revoke()``, ``.reset()``, ``.stats`` (a dict
  snapshot), ``.sizes`` (entries per store of issued secrets) and ``.config`` (the live ``EmulatorConfig``).
- A proxy in front of it (``_proxy.py``): ``auth_proxy`` is an authenticating HTTP forward proxy (Basic,
  407 otherwise; CONNECT too) that serves loopback only; ``proxy_factory(username=..., password=...)`` starts
  more (``username=None``: an open proxy). ``.url``, ``.auth_url`` (with the credentials), ``.url_for(user,
  password)``, ``.stats`` (``authenticated``, ``refused``, ``forwarded``, ``paths``, ...).

The challenge
=============
Every page and API route needs a valid ``cf_clearance`` cookie unless ``require_clearance=False``.

- Without one, ``GET /`` (``/chat``, ``/playground``, ``/login``, any unknown path, and every API route) answers
  **403** ``<title>Just a moment...</title>`` with ``window._cf_chl_opt = {...}``, ``<div id="challenge-running">``,
  ``<div id="challenge-error">`` and headers ``cf-mitigated: challenge``, ``server: cloudflare``, ``cf-ray``.
- Its script waits ``think_ms``, then writes "refused: ..." into ``#challenge-error`` and stops if
  ``navigator.webdriver`` is true or the UA contains ``HeadlessChrome``. Otherwise it hashes the page's nonce
  (``_cf_chl_opt.cNounce``; ``_challenge.solve`` is the same proof in Python) and POSTs JSON ``{nonce, answer}``
  to ``/cdn-cgi/challenge-platform/answer``. A right, fresh, unused answer gets 200 ``{"success": true}`` and
  ``Set-Cookie: cf_clearance=<43 chars>; HttpOnly; Max-Age=<ceil(clearance_ttl)>; Path=/; SameSite=Lax``
  (no Secure: plain http). A wrong/stale one gets 403 ``{"success": false}``. Then the page calls
  ``location.reload()``.
- A clearance is bound to the User-Agent that answered: the same cookie with another UA counts as no clearance.
  It expires after ``clearance_ttl`` seconds (server-side, float allowed) and ``revoke`` drops all of them.
- Cleared ``GET /`` is 200 ``<title>Playground</title>`` with ``<div id="app">``; its JS sets
  ``_pg_visit=1`` and the response sets the non-HttpOnly ``__cf_bm=<random>; Max-Age=1800; Path=/``.
- Variants (knob ``variant``):
    * ``normal`` (default).
    * ``blocked``: every page, API and the answer endpoint give 403 ``<title>Access denied | 127.0.0.1 used
      Cloudflare to restrict access</title>`` with ``<div id="cf-error-details">``, "Access denied", "Error 1020".
    * ``interactive``: the challenge also shows ``<div class="cf-turnstile" id="cf-turnstile">`` with
      ``<input type="checkbox" id="cf-turnstile-checkbox">``; it never auto-posts, only a trusted click
      (``event.isTrusted``: a human, or CDP ``Input.dispatchMouseEvent``; not ``element.click()``) posts, or
      a person completing it out of band (``POST /__emulator__/person/solve``, below).
    * ``login-required``: clears normally, but ``GET /api/auth/session`` answers ``{}`` until the request has an
      ``authjs.session-token`` cookie from ``POST /login`` (form fields ``username``, ``password``; any
      non-empty username; answers 302 to ``/`` with the HttpOnly cookie). ``GET /login`` serves the form
      (``#username``, ``#password``, ``#login-submit``). Until someone signs in, ``/`` and ``/login`` wait for a
      person (``POST /__emulator__/person/sign-in``, below).

Playing the person (test-only)
==============================
Nothing clicks the widget or types into the form: a test says a person acted, and the page finishes itself.
Pages poll every 200 ms (``stats["person_polls"]`` counts the polls, so "the window is up" is observable).

- ``POST /__emulator__/person/solve`` -> ``{"solved": N}``: a person completes every interactive challenge page
  open now (a page served later needs another solve). The page then posts its answer as after a trusted click.
- ``POST /__emulator__/person/sign-in`` with ``{"username": "ada"}`` (default ``"person"``; 400 if empty): the
  waiting app page goes to a stand-in identity provider on another origin (``http://localhost:PORT/
  __emulator__/person/idp?next=...``, ungated; it waits 1.5 s), which returns to ``/login``; that page fills
  and submits the form. The signal is used up once that username logs in.

Providers (one origin, real paths)
==================================
Reply text is ``"Hello from the <provider> emulator. You said: <last user message>"`` split into words with
their trailing spaces (provider: cloudflare, cerebras, deepinfra, freenetfly), or exactly ``stream_chunks``
chunks of ``chunk_text`` when that knob is set. Unknown ``model`` -> 404 ``{"error":{"message":"model not
found"}}``; a missing model means the provider's first one. Extra JSON keys are accepted and ignored.

- Cloudflare playground: ``GET /api/models`` -> list of ``{"name", "description", "task": {"name": "Text
  Generation"}}`` (``_catalog.CLOUDFLARE_MODELS``). ``POST /api/inference`` (always streams) ->
  ``text/plain; charset=utf-8`` Vercel AI data stream: ``0:"<token>"\\n`` per chunk, then
  ``e:{"finishReason":"stop","usage":{"promptTokens":N,"completionTokens":M},"isContinued":false}\\n`` and
  ``d:{"finishReason":"stop","usage":{...}}\\n``.
- Cloudflare playground, agent protocol (what the real page speaks today): ``GET /agents/playground/{agent_id}``
  ``?_pk=...&model=...`` upgrades to a WebSocket (``_agent.py``). Gated like every API route: without clearance the
  upgrade gets the 403 challenge (``cf-mitigated: challenge``), and ``fail_next``/``rate_limit_next`` answer it
  with their status; counted under ``api_requests["/agents/playground"]``. On open it sends
  ``{"type":"cf_agent_identity",...}`` and a ``cf_agent_state`` echo; it takes the model from the query, then from
  a ``cf_agent_state`` frame. Each ``cf_agent_use_chat_request`` (``init.body``: a JSON string with UI
  ``messages``) is answered with ``cf_agent_use_chat_response`` frames whose ``body`` is one JSON-string part:
  ``start``, ``start-step``, ``text-start``, one ``text-delta`` (``delta``) per chunk, ``text-end``,
  ``finish-step``, ``finish`` (``finishReason: "stop"``, ``messageMetadata.usage`` with ``inputTokens``,
  ``outputTokens``, ``totalTokens``), then ``{"body": "", "done": true}``. An unknown model gets one frame with
  ``done: true, error: true`` and the message as body. Client text frames only; binary or non-JSON ends the socket.
- Cerebras: ``GET /api/auth/session`` -> ``{"user": {"name": "demo", "email", "demoApiKey": "csk-..."},
  "expires": "<iso>Z"}``; the key is minted once per clearance cookie (per UA when clearance is off) and
  remembered; ``revoke``/``reset`` forget all keys. ``POST /v1/chat/completions`` needs
  ``Authorization: Bearer <issued key>`` else 401 ``{"error":{"message":"Wrong API Key","type":
  "invalid_request_error"}}``. ``GET /v1/models`` lists ``_catalog.CEREBRAS_MODELS`` (OpenAI list, no key needed).
- DeepInfra: ``GET /models/featured`` -> list of ``{"model_name", "type", "reported_type", ...}``; image models
  have ``reported_type == "text-to-image"`` (``stabilityai/sd3.5`` also has that ``type``;
  ``black-forest-labs/FLUX-1-schnell`` has ``type: "custom"``). ``POST /v1/openai/chat/completions`` -> OpenAI.
  ``POST /v1/inference/{model}`` with ``{"prompt"}`` or ``{"input": {"prompt"}}``: sd3.5 ->
  ``{"images": ["data:image/png;base64,..."]}``; other image models -> ``{"output": ["<base>/static/img/<id>.png"]}``
  (served ungated by ``GET /static/img/{id}.png``); text models -> ``{"results": [{"generated_text"}]}``.
- FreeNetfly: ``POST /api/openai/v1/chat/completions`` -> OpenAI (models ``_catalog.FREENETFLY_MODELS``).
- OpenAI-style routes: ``"stream": true`` -> ``text/event-stream`` of ``data: {chat.completion.chunk}\\n\\n``
  events (``delta: {"role": "assistant", "content": tok}``, ``finish_reason: null``), then a chunk with
  ``delta: {}``, ``finish_reason: "stop"`` and ``usage`` {prompt,completion,total}_tokens, then
  ``data: [DONE]\\n\\n``. Models whose name contains ``r1`` or ``reasoning`` first send 2 chunks with
  ``delta.reasoning_content``. Otherwise one ``chat.completion`` JSON object.

Faults and knobs (``EmulatorConfig`` fields)
============================================
Set in-process with ``configure(**knobs)`` or over HTTP ``POST /__emulator__/config`` (JSON object; 400 on an
unknown knob; answers the new config; ``GET`` reads it). ``POST /__emulator__/reset`` restores the start-up
knobs and clears faults, secrets and stats; ``POST /__emulator__/revoke`` drops all clearances and API keys;
``GET /__emulator__/stats``. Control routes are never gated.

Issued secrets (nonces, clearances, API keys, logins, image ids) are bounded: expired nonces and clearances are
dropped as new ones are issued, and each store keeps at most ``_state.MAX_ENTRIES`` (10,000), oldest first out.

"API requests" are the provider routes above except ``/api/auth/session`` (that one is the harvester's, so API
faults and ``challenge_api`` leave it alone) and ``/static/img``.

- ``think_ms`` (300), ``clearance_ttl`` (3600.0), ``variant`` ("normal"), ``require_clearance`` (True).
- ``fail_next`` (0) + ``fail_status`` (503): the next N cleared API requests get that status, JSON error body.
- ``rate_limit_next`` (0) + ``retry_after`` (1.0): the next N get 429 with ``Retry-After`` (``%g`` format).
- ``challenge_api`` (False): API requests get the 403 challenge page even with a valid clearance.
- ``cut_stream`` (False): about half the events, then half of the next event, then the socket is closed
  without the chunked terminator (clients see a truncated/incomplete body).
- ``malformed_event`` (False): mid-stream, ``data: {"choices": [{"delta": {"content": \\n\\n`` (data stream:
  ``0:"unterminated\\n``); the stream then finishes normally.
- ``error_event`` (False): mid-stream, ``event: error\\ndata: {"error":{"message":"upstream overloaded"}}\\n\\n``
  (data stream: ``3:"upstream overloaded"\\n``); the stream then finishes normally.
- ``drip_ms`` (0.0): sleep between events, written one by one (otherwise 64 events per write).
- ``stream_chunks`` (None) + ``chunk_text`` ("tok ").
- Agent socket knobs: ``cut_stream`` sends about half the deltas, then a close frame (1011) and drops the
  connection (no ``finish``, no ``done``); ``error_event`` / ``malformed_event`` splice an ``error`` part / a cut
  JSON frame mid-reply; ``drip_ms`` paces frames. ``unknown_frames`` (False) splices frames of unknown types and a
  ``data-emulator`` part mid-reply; ``first_frame_ms`` (0.0) waits that long after a chat request before the first
  reply frame; ``fragment_frames`` (False) sends every message as a text frame without FIN plus two continuation
  frames (cut anywhere, even inside a UTF-8 character).

Stats: ``clearances_issued`` (successful answers, i.e. browser runs), ``challenge_pages``, ``blocked_pages``,
``api_requests`` ({path: count}, every request reaching an API route, gated or not), ``api_requests_total``,
``session_requests``, ``api_keys_issued``, ``logins``, ``faults_injected``, ``person_polls``, ``last_user_agent`` and
``last_headers`` (lower-case names) of the last API request, ``clearance_user_agent`` (UA of the last answer),
``agent_sockets_opened`` / ``agent_sockets_open`` (accepted upgrades / sockets open now), ``agent_frames`` (the
frame types the last socket sent up to its chat request).
"""

from __future__ import annotations

from ._server import Emulator, EmulatorThread
from ._state import EmulatorConfig

__all__ = ["Emulator", "EmulatorConfig", "EmulatorThread"]
