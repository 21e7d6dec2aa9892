"""The page-wait decisions (``_wait.next_action``), the net-error map and URL checks: pure, tested by tables."""

from __future__ import annotations

import pytest

from harvester import (
    BlockedError,
    ChallengeTimeout,
    InvalidURLError,
    NeedsHeadfulError,
    SiteUnreachableError,
    classify,
)
from harvester._classify import PageState, Verdict
from harvester._driver import set_cookie_names
from harvester._net import unreachable
from harvester._recipes import check_url, mask_password, resolve_recipe
from harvester._wait import Cleared, Fail, Progress, Reload, Wait, next_action

RECIPE = resolve_recipe("cloudflare", base_url="http://127.0.0.1:8080")
PAGE = PageState(url="http://127.0.0.1:8080/", status=200)
P503 = PageState(url="http://127.0.0.1:8080/", status=503)


def _p(elapsed: float = 1.0, **kw: object) -> Progress:
    return Progress(elapsed=elapsed, timeout=kw.pop("timeout", 10.0), **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("page", "verdict", "progress", "expected"),
    [
        (PAGE, "cleared", _p(), Cleared),
        (PAGE, "cleared", _p(elapsed=99.0), Cleared),  # cleared at the deadline still counts
        (PAGE, "challenge", _p(), Wait),
        (PAGE, "loading", _p(), Wait),
        (P503, "unavailable", _p(since_reload=0.2, answered=True), Wait),
        (P503, "unavailable", _p(since_reload=1.0, answered=True), Reload),
        (PAGE, "blocked", _p(), BlockedError),
        (PAGE, "unreachable", _p(), SiteUnreachableError),
        (PAGE, "interactive", _p(), NeedsHeadfulError),
        (PAGE, "login_required", _p(), NeedsHeadfulError),
        (PAGE, "interactive", _p(headful=True), Wait),  # a person may act: keep waiting
        (PAGE, "login_required", _p(headful=True), Wait),
        (PAGE, "challenge", _p(elapsed=10.0, answered=True), ChallengeTimeout),
        (P503, "unavailable", _p(elapsed=10.0, answered=True), BlockedError),
        (PAGE, "loading", _p(elapsed=10.0, answered=False), SiteUnreachableError),
        (PAGE, "loading", _p(elapsed=10.0, answered=True, shown="unavailable"), BlockedError),
        (PAGE, "interactive", _p(elapsed=10.0, answered=True, headful=True), ChallengeTimeout),
        # The proof cookie is set but the challenge page stays: reload it ourselves, at most once a second.
        (PAGE, "challenge", _p(since_proof=1.0, since_reload=1.0, answered=True), Reload),
        (PAGE, "challenge", _p(since_proof=0.5, since_reload=5.0, answered=True), Wait),
        (PAGE, "challenge", _p(since_proof=5.0, since_reload=0.5, answered=True), Wait),
        (PAGE, "loading", _p(since_proof=5.0, since_reload=5.0, answered=True), Wait),  # it is moving on
    ],
)
def test_next_action(page: PageState, verdict: Verdict, progress: Progress, expected: type) -> None:
    """Each page state, time and history gives one action (a raise carries the right error class)."""
    action = next_action(RECIPE, page, verdict, progress)
    if issubclass(expected, Exception):
        assert isinstance(action, Fail) and type(action.error) is expected
        assert action.error.provider == "cloudflare" and action.error.url == RECIPE.start_url
    else:
        assert type(action) is expected


def test_wait_never_passes_the_deadline() -> None:
    """Close to the deadline the wait shrinks to what is left."""
    action = next_action(RECIPE, PAGE, "challenge", _p(elapsed=9.98))
    assert isinstance(action, Wait) and action.seconds == pytest.approx(0.02)


@pytest.mark.parametrize(
    ("verdict", "progress", "message"),
    [
        ("unavailable", _p(elapsed=10.0, answered=True), "kept answering HTTP 503 for 10 s"),
        ("loading", _p(elapsed=10.0), "no answer from http://127.0.0.1:8080/ within 10 s"),
        ("challenge", _p(elapsed=10.0, answered=True), "did not clear within 10 s"),
        ("interactive", _p(elapsed=10.0, answered=True, headful=True), "nobody completed the interactive"),
        ("loading", _p(elapsed=10.0, answered=True, shown="interactive", headful=True), "nobody completed"),
    ],
)
def test_deadline_messages_say_what_the_page_showed(verdict: Verdict, progress: Progress, message: str) -> None:
    """At the deadline the message follows the last thing the page showed, not "did not clear" for everything."""
    action = next_action(RECIPE, P503, verdict, progress)
    assert isinstance(action, Fail) and message in str(action.error)


def test_chrome_error_page_is_unreachable() -> None:
    """Chromium's own error page classifies as unreachable and names the net error."""
    page = PageState(
        url="chrome-error://chromewebdata/", html='<div jscontent="errorCode">ERR_CONNECTION_REFUSED</div>'
    )
    assert classify(page) == "unreachable"
    action = next_action(RECIPE, page, "unreachable", _p())
    assert isinstance(action, Fail) and isinstance(action.error, SiteUnreachableError)
    assert "connection refused" in str(action.error) and action.error.reason == "ERR_CONNECTION_REFUSED"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("net::ERR_CONNECTION_REFUSED", "connection refused"),
        ("net::ERR_NAME_NOT_RESOLVED at https://nowhere.invalid/", "does not resolve"),
        ("net::ERR_UNSAFE_PORT", "unsafe port"),
        ("Page.goto: net::ERR_CERT_AUTHORITY_INVALID at https://x/", "certificate"),
    ],
)
def test_unreachable_net_errors(text: str, reason: str) -> None:
    """The net errors that mean "the site is down" become SiteUnreachableError with a plain reason."""
    error = unreachable("http://x/", text)
    assert isinstance(error, SiteUnreachableError) and reason in str(error)
    assert str(error).startswith("cannot reach http://x/: ")


@pytest.mark.parametrize("text", ["net::ERR_ABORTED", "net::ERR_INVALID_URL", "Target closed", ""])
def test_other_net_errors_are_not_unreachable(text: str) -> None:
    """Anything else is not called "unreachable" (it stays the driver's error)."""
    assert unreachable("http://x/", text) is None


@pytest.mark.parametrize(
    "url",
    [
        "",
        "  ",
        "javascript:alert(1)",
        "data:text/html,<h1>hi</h1>",
        "file:///etc/passwd",
        "ftp://example.com/",
        "http://127.0.0.1:99999/",
        "http://127.0.0.1:0/",
        "http://",
        "http://exa mple.com/",
        "http://example.com/a\nb",
    ],
)
def test_check_url_rejects_what_a_browser_must_not_open(url: str) -> None:
    """Only http(s) URLs with a host and a valid port pass; the error is a ValueError too."""
    with pytest.raises(InvalidURLError, match=r"--url must be an http\(s\) URL"):
        check_url(url)
    with pytest.raises(ValueError):
        check_url(url)


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://127.0.0.1:8080/x?y=1", "http://127.0.0.1:8080"),
        ("localhost:8080", "https://localhost:8080"),
        ("example.com/path", "https://example.com"),
        ("HTTPS://Example.com", "https://Example.com"),
    ],
)
def test_check_url_accepts_http_urls(url: str, origin: str) -> None:
    """http(s) URLs and bare hosts (https assumed) pass."""
    parts = check_url(url)
    assert f"{parts.scheme}://{parts.netloc}".lower() == origin.lower()


def test_url_with_a_password_is_refused_and_never_shows_it() -> None:
    """A URL with user:password@ is a usage error whose message shows the password as ***."""
    with pytest.raises(InvalidURLError) as info:
        check_url("http://ada:hunter2@127.0.0.1:8080/")
    assert "hunter2" not in str(info.value) and "ada:***@127.0.0.1:8080" in str(info.value)
    assert mask_password("https://u:p%40ss@h/x") == "https://u:***@h/x"
    assert mask_password("https://h/x@y") == "https://h/x@y"


@pytest.mark.parametrize(
    ("headers", "names"),
    [
        ({"Set-Cookie": "cf_clearance=abc; HttpOnly; Path=/"}, ["cf_clearance"]),
        ({"set-cookie": "a=1; Path=/\n__cf_bm=x=y; Max-Age=1800"}, ["a", "__cf_bm"]),  # repeated headers
        ({"content-type": "text/html"}, []),
        ({"set-cookie": "garbage without equals"}, []),
        (None, []),
    ],
)
def test_set_cookie_names(headers: object, names: list[str]) -> None:
    """The cookie names a response sets are read from CDP's raw headers, however the header is spelled."""
    assert set_cookie_names(headers) == names
