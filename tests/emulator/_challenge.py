"""The Cloudflare-style pages: the JS challenge, the block page, the app page and the login form.

Pure functions only: each returns HTML text, and `solve()` is the proof the challenge JS computes, so the server
can check an answer without a browser.

Pages that wait for a person (the interactive widget, a login) also poll the emulator's test-only
`/__emulator__/person/...` routes, so a test can play the person from outside the browser: nothing clicks the
widget, the page completes itself once told that a person did.
"""

from __future__ import annotations

import html
import json

# The proof is a polynomial hash of the nonce, repeated; small enough for exact JS arithmetic (< 2**53).
_MODULUS = 1_000_000_007
_SEED = 7919
_ROUNDS = 50

CHALLENGE_TITLE = "Just a moment..."
BLOCKED_TITLE = "Access denied | 127.0.0.1 used Cloudflare to restrict access"
APP_TITLE = "Playground"
PERSON_POLL_MS = 200  # how often a page that waits for a person asks whether one acted
IDP_DWELL_MS = 1500  # how long the person stays on the identity provider's page while signing in


def solve(nonce: str, seed: int = _SEED, rounds: int = _ROUNDS) -> int:
    """The answer the challenge page posts for `nonce` (mirrors the inline JS exactly)."""
    h = seed
    for _ in range(rounds):
        for char in nonce:
            h = (h * 31 + ord(char)) % _MODULUS
    return h


def challenge_page(nonce: str, ray: str, think_ms: float, *, interactive: bool) -> str:
    """The 403 interstitial; its script refuses automation markers, then proves work and posts the answer."""
    opt = {
        "cvId": "3",
        "cZone": "127.0.0.1",
        "cType": "interactive" if interactive else "managed",
        "cNounce": nonce,
        "cRay": ray,
        "cSeed": _SEED,
        "cRounds": _ROUNDS,
        "cThinkMs": think_ms,
        "cInteractive": interactive,
    }
    widget = (
        '<div class="cf-turnstile" id="cf-turnstile" style="display:none">'
        '<label><input type="checkbox" id="cf-turnstile-checkbox"> Verify you are human</label></div>'
        if interactive
        else ""
    )
    return f"""<!DOCTYPE html>
<html lang="en-US"><head><meta charset="UTF-8"><title>{CHALLENGE_TITLE}</title>
<meta name="robots" content="noindex,nofollow"></head>
<body>
<div class="main-wrapper"><h1>127.0.0.1</h1>
<h2 id="challenge-body-text">Verifying you are human. This may take a few seconds.</h2>
<div id="challenge-running">Checking your browser before accessing 127.0.0.1.</div>
{widget}
<div id="challenge-error" role="alert"></div>
<div class="ray-id">Ray ID: <code>{ray}</code></div></div>
<script>
window._cf_chl_opt = {json.dumps(opt)};
(function () {{
  var opt = window._cf_chl_opt;
  var err = document.getElementById("challenge-error");
  function refuse(why) {{ err.textContent = "refused: " + why; }}
  function solve(nonce) {{
    var h = opt.cSeed;
    for (var r = 0; r < opt.cRounds; r++) {{
      for (var i = 0; i < nonce.length; i++) {{ h = (h * 31 + nonce.charCodeAt(i)) % {_MODULUS}; }}
    }}
    return h;
  }}
  var posted = false;
  function post() {{
    if (posted) return;
    posted = true;
    fetch("/cdn-cgi/challenge-platform/answer", {{
      method: "POST", credentials: "same-origin",
      headers: {{"content-type": "application/json"}},
      body: JSON.stringify({{nonce: opt.cNounce, answer: solve(opt.cNounce)}})
    }}).then(function (r) {{
      if (r.ok) {{ location.reload(); }} else {{ err.textContent = "failed: HTTP " + r.status; }}
    }}, function (e) {{ err.textContent = "failed: " + e; }});
  }}
  setTimeout(function () {{
    if (navigator.webdriver) return refuse("navigator.webdriver");
    if (navigator.userAgent.indexOf("HeadlessChrome") !== -1) return refuse("HeadlessChrome");
    if (!opt.cInteractive) return post();
    var box = document.getElementById("cf-turnstile-checkbox");
    document.getElementById("cf-turnstile").style.display = "block";
    box.addEventListener("click", function (ev) {{
      // Only a real input event (CDP or a human) is trusted; element.click() from script is not.
      if (ev.isTrusted === true) {{ post(); }} else {{ box.checked = false; refuse("untrusted click"); }}
    }});
    // Test-only stand-in for the person at a visible browser: once the test says a person ticked the box,
    // finish as a trusted click would.
    (function poll() {{
      fetch("/__emulator__/person/solve?nonce=" + encodeURIComponent(opt.cNounce), {{cache: "no-store"}})
        .then(function (r) {{ return r.json(); }})
        .then(function (a) {{
          if (a.solved) {{ box.checked = true; post(); }} else {{ setTimeout(poll, {PERSON_POLL_MS}); }}
        }}, function () {{ setTimeout(poll, {PERSON_POLL_MS}); }});
    }})();
  }}, opt.cThinkMs);
}})();
</script></body></html>
"""


def blocked_page(ray: str) -> str:
    """The 403 "Error 1020" page that no browser can get past."""
    return f"""<!DOCTYPE html>
<html lang="en-US"><head><meta charset="UTF-8"><title>{BLOCKED_TITLE}</title></head>
<body><div id="cf-wrapper"><div id="cf-error-details">
<h1>Access denied</h1><span class="cf-error-code">Error 1020</span>
<p>This website is using a security service to protect itself from online attacks.</p>
<p>Ray ID: <code>{ray}</code></p></div></div></body></html>
"""


def app_page(path: str, *, awaits_sign_in: bool = False) -> str:
    """The cleared app shell; it sets a plain JS cookie like a real single-page app would, and marks its
    `#app` with `data-rendered="by-script"` (only a page whose script ran has the attribute).

    With `awaits_sign_in` (login-required, nobody signed in) it also waits for a person to start signing in,
    and then goes to the identity provider, on another origin, as "Sign in with ..." buttons do.
    """
    sign_in = ""
    if awaits_sign_in:
        sign_in = _await_person(
            """var host = location.hostname === "localhost" ? "127.0.0.1" : "localhost";
      location.href = "http://" + host + ":" + location.port + "/__emulator__/person/idp?next=" +
        encodeURIComponent(location.origin + "/login");"""
        )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="UTF-8"><title>{APP_TITLE}</title></head>
<body><div id="app" data-path="{html.escape(path)}"><h1>Playground</h1>
<p>Cloudflare, Cerebras, DeepInfra and FreeNetfly stand-ins are served from this origin.</p></div>
<script>document.cookie = "_pg_visit=1; path=/";
document.getElementById("app").dataset.rendered = "by-script";</script>{sign_in}</body></html>
"""


def login_page(error: str = "", *, awaits_sign_in: bool = False) -> str:
    """The username/password form of the login-required variant.

    With `awaits_sign_in`, a person who is signing in fills and submits the form.
    """
    message = f'<p id="login-error">{html.escape(error)}</p>' if error else ""
    sign_in = ""
    if awaits_sign_in:
        sign_in = _await_person(
            """document.getElementById("username").value = name;
      document.getElementById("password").value = "correct horse";
      document.getElementById("login-form").submit();"""
        )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="UTF-8"><title>Sign in</title></head>
<body><div id="app"><h1>Sign in</h1>{message}
<form id="login-form" method="post" action="/login">
<input type="text" name="username" id="username" autocomplete="username">
<input type="password" name="password" id="password" autocomplete="current-password">
<button type="submit" id="login-submit">Sign in</button></form></div>{sign_in}</body></html>
"""


def idp_page(next_url: str) -> str:
    """The identity provider's page, on another origin: the person spends a moment here, then returns."""
    target = json.dumps(next_url).replace("<", "\\u003c")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="UTF-8"><title>Emulator ID</title></head>
<body><h1>Sign in with Emulator ID</h1>
<script>setTimeout(function () {{ location.replace({target}); }}, {IDP_DWELL_MS});</script></body></html>
"""


def _await_person(then: str) -> str:
    """A script that polls until a person signs in, then runs `then` (JS with `name` in scope)."""
    return f"""
<script>
(function poll() {{
  fetch("/__emulator__/person/sign-in", {{cache: "no-store"}})
    .then(function (r) {{ return r.json(); }})
    .then(function (a) {{
      if (!a.username) {{ setTimeout(poll, {PERSON_POLL_MS}); return; }}
      var name = a.username;
      {then}
    }}, function () {{ setTimeout(poll, {PERSON_POLL_MS}); }});
}})();
</script>"""
