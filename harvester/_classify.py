"""Is this page a challenge, a block, a login wall or the site itself? Pure functions of what the page shows."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Verdict = Literal[
    "loading", "challenge", "interactive", "blocked", "unavailable", "unreachable", "login_required", "cleared"
]

# Markers Cloudflare's interstitials carry (and the emulator copies). Order matters: an interactive
# challenge is also a challenge, and a block page may mention the challenge platform.
_CHALLENGE_TITLES = ("just a moment", "attention required", "checking your browser")
_CHALLENGE_MARKERS = ("_cf_chl_opt", "challenge-running", "challenge-platform", "cf-challenge")
# A Turnstile *element* (the managed challenge's script may name the widget too, so match the markup).
_INTERACTIVE = re.compile(
    r"""class=["'][^"']*\bcf-turnstile\b|id=["']cf-chl-widget|challenges\.cloudflare\.com/turnstile"""
)
_BLOCKED_MARKERS = ("cf-error-details", "access denied", "error code: 1020", "sorry, you have been blocked")
_LOGIN_MARKERS = ('id="login-form"', "data-login-required")
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class PageState:
    """A snapshot of the page: enough to classify it without touching the browser again."""

    url: str = ""
    status: int | None = None
    title: str = ""
    html: str = field(default="", repr=False)
    ready_state: str = "complete"
    #: The document's response headers as the browser received them (lower-case names; the last value of a
    #: repeated field), when the driver saw that response; None otherwise.
    headers: dict[str, str] | None = field(default=None, repr=False, compare=False)


def title_of(html: str) -> str:
    """The ``<title>`` text of an HTML document ("" if none)."""
    match = _TITLE.search(html)
    return match.group(1).strip() if match else ""


def classify(state: PageState) -> Verdict:
    """Classify one snapshot of a page.

    - ``interactive``: a Turnstile-style widget that only a person can answer;
    - ``challenge``: a JS challenge still running (it clears by itself in a real browser);
    - ``blocked``: "Access denied" and friends, which waiting will not change;
    - ``unavailable``: HTTP 5xx without challenge markers (the site is failing, maybe briefly);
    - ``unreachable``: Chromium's own error page (connection refused, DNS, TLS...);
    - ``login_required``: the site wants a signed-in user (HTTP 401, or a login form marker);
    - ``loading``: a blank tab, or a document still parsing with no marker yet;
    - ``cleared``: anything else: the site itself.
    """
    if state.url.startswith("about:"):
        return "loading"  # the blank tab before the navigation commits
    if state.url.startswith("chrome-error:"):
        return "unreachable"  # Chromium's own error page: the site could not be reached
    title = (state.title or title_of(state.html)).strip().lower()
    html = state.html.lower()
    challenge = any(title.startswith(t) for t in _CHALLENGE_TITLES) or any(m in html for m in _CHALLENGE_MARKERS)
    if _INTERACTIVE.search(html):
        return "interactive"
    if challenge:
        return "challenge"
    if any(m in html or m in title for m in _BLOCKED_MARKERS):
        return "blocked"
    if state.status is not None and state.status >= 500:
        return "unavailable"
    if state.status == 401 or any(m in html for m in _LOGIN_MARKERS):
        return "login_required"
    if state.ready_state == "loading":
        return "loading"  # no verdict on a half-parsed document (its cookies and scripts are not done)
    if state.status == 403:
        # A bare 403 with no markers: judge it like a block page.
        return "blocked"
    return "cleared"
