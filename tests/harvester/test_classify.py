"""Page classification is a pure function of what the page shows."""

from __future__ import annotations

import pytest

from harvester import PageState, classify
from tests.emulator import _challenge

URL = "http://127.0.0.1:1/"


def test_managed_challenge_is_a_challenge() -> None:
    """The emulator's JS interstitial is a challenge that clears by itself."""
    html = _challenge.challenge_page("n", "r", 300, interactive=False)
    assert classify(PageState(url=URL, status=403, html=html)) == "challenge"


def test_turnstile_widget_is_interactive() -> None:
    """A Turnstile element marks a challenge only a person can pass."""
    html = _challenge.challenge_page("n", "r", 300, interactive=True)
    assert classify(PageState(url=URL, status=403, html=html)) == "interactive"


def test_block_page_is_blocked() -> None:
    """An "Access denied" page with cf-error-details is blocked."""
    assert classify(PageState(url=URL, status=403, html=_challenge.blocked_page("r"))) == "blocked"


def test_app_page_is_cleared() -> None:
    """The site itself, once loaded, is cleared."""
    state = PageState(url=URL, status=200, title="Playground", html=_challenge.app_page("/"))
    assert classify(state) == "cleared"


def test_login_form_needs_a_person() -> None:
    """A login form (or HTTP 401) means a login is required."""
    assert classify(PageState(url=URL, status=200, html=_challenge.login_page())) == "login_required"
    assert classify(PageState(url=URL, status=401, html="<html></html>")) == "login_required"


@pytest.mark.parametrize(
    ("state", "verdict"),
    [
        (PageState(url="about:blank", html="<html></html>"), "loading"),
        (PageState(url=URL, status=200, html="<html><body>x", ready_state="loading"), "loading"),
        (PageState(url=URL, status=503, html="<html>oops</html>"), "unavailable"),
        (PageState(url=URL, status=403, html="<html>no</html>"), "blocked"),
        (PageState(url=URL, status=200, title="Just a moment...", html=""), "challenge"),
    ],
)
def test_edge_cases(state: PageState, verdict: str) -> None:
    """Blank tabs and half-parsed pages wait; 5xx is unavailable; a bare 403 is blocked; the title alone is enough."""
    assert classify(state) == verdict
