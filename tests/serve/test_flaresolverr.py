"""FlareSolverr's `POST /v1` against the real app, real Chromium and the emulator."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from cache import AuthCache
from tests.emulator import EmulatorThread
from tests.emulator._proxy import ProxyThread
from tests.providers.conftest import make_record

from .conftest import Server


def test_index_and_health_answer_like_flaresolverr(serve_factory: Callable[..., Server]) -> None:
    """`GET /` and `GET /health` answer FlareSolverr's documents, without a token even when one is set."""
    server = serve_factory(token="secret-token-1")
    status, _, body = server.call("GET", "/", token=None)
    assert status == 200 and body["msg"] == "FlareSolverr is ready!" and body["version"] and body["userAgent"]
    status, _, body = server.call("GET", "/health", token=None)
    assert (status, body) == (200, {"status": "ok"})


def test_cold_request_runs_the_browser_once_then_answers_from_the_cache(
    server: Server, emulator: EmulatorThread
) -> None:
    """An empty cache costs one browser run; the next request fetches with the record, with the real status and headers."""
    status, body = server.v1(cmd="request.get", url=emulator.url + "/")
    assert status == 200, body
    assert body["status"] == "ok" and body["message"] == "Challenge solved!"
    solution = body["solution"]
    assert solution["status"] == 200 and "<title>Playground</title>" in solution["response"]
    assert any(c["name"] == "cf_clearance" for c in solution["cookies"])
    assert set(solution["cookies"][0]) == {
        "name",
        "value",
        "domain",
        "path",
        "expires",
        "httpOnly",
        "secure",
        "sameSite",
    }
    assert "Chrome/" in solution["userAgent"] and "Headless" not in solution["userAgent"]
    assert {"startTimestamp", "endTimestamp", "version"} <= set(body)
    assert emulator.stats["clearances_issued"] == 1
    assert AuthCache.open().get("127.0.0.1") is not None  # kept as a record named after the host

    status, body = server.v1(cmd="request.get", url=emulator.url + "/chat?x=1")
    assert status == 200 and body["message"] == "Challenge not detected!"
    assert body["solution"]["headers"]["server"] == "cloudflare"  # the real headers, not FlareSolverr's {}
    assert body["solution"]["url"] == emulator.url + "/chat?x=1"
    assert emulator.stats["clearances_issued"] == 1  # no second browser run


def test_after_a_browser_run_the_response_is_the_page_the_browser_saw(server: Server, emulator: EmulatorThread) -> None:
    """After a browser run `response` is the page as the browser rendered it (its script ran), not a second fetch,
    with the status and headers of the response the browser received for it (FlareSolverr says 200 and {})."""
    status, body = server.v1(cmd="request.get", url=emulator.url + "/")
    assert status == 200 and body["message"] == "Challenge solved!", body
    solution = body["solution"]
    assert 'data-rendered="by-script"' in solution["response"]  # set by the page's script: only a browser has it
    assert solution["status"] == 200 and solution["url"] == emulator.url + "/"
    headers = solution["headers"]
    assert headers["server"] == "cloudflare" and headers["content-type"].startswith("text/html")
    assert "cf-mitigated" not in headers  # the cleared page's response, not the challenge's
    # The next request is fetched with the record: the page as served, with its real headers.
    status, body = server.v1(cmd="request.get", url=emulator.url + "/")
    assert status == 200 and body["message"] == "Challenge not detected!"
    assert 'data-rendered="by-script"' not in body["solution"]["response"]
    assert body["solution"]["headers"]["server"] == "cloudflare"


def test_hundred_concurrent_requests_for_one_site_make_one_browser_run(
    server: Server, emulator: EmulatorThread
) -> None:
    """100 concurrent `request.get` for one site with an empty cache share a single browser run."""
    with ThreadPoolExecutor(max_workers=100) as pool:
        results = list(pool.map(lambda _: server.v1(cmd="request.get", url=emulator.url + "/"), range(100)))
    assert [status for status, _ in results] == [200] * 100, results[0]
    assert all('data-rendered="by-script"' in body["solution"]["response"] for _, body in results)  # the run's page
    assert emulator.stats["clearances_issued"] == 1
    assert server.state.runs.started == 1


def test_return_only_cookies_answers_from_the_cache_without_a_fetch(server: Server, emulator: EmulatorThread) -> None:
    """`returnOnlyCookies` with a fresh record sends nothing to the site and carries no page."""
    record = make_record("127.0.0.1", emulator.url)
    AuthCache.open().put(record)
    before = emulator.stats
    status, body = server.v1(cmd="request.get", url=emulator.url + "/", returnOnlyCookies=True)
    assert status == 200, body
    solution = body["solution"]
    assert "response" not in solution and "headers" not in solution
    assert [c["value"] for c in solution["cookies"]] == [record.cookies[0].value]
    assert solution["userAgent"] == record.user_agent
    after = emulator.stats
    assert (
        after["challenge_pages"] == before["challenge_pages"]
        and after["api_requests_total"] == before["api_requests_total"]
    )


def test_a_challenge_met_by_the_fetch_starts_a_browser_run(server: Server, emulator: EmulatorThread) -> None:
    """A cached record whose clearance was revoked meets the challenge; the browser clears it and the page comes back."""
    AuthCache.open().put(make_record("127.0.0.1", emulator.url))
    emulator.revoke()
    status, body = server.v1(cmd="request.get", url=emulator.url + "/")
    assert status == 200, body
    assert body["message"] == "Challenge solved!" and "<title>Playground</title>" in body["solution"]["response"]
    assert emulator.stats["clearances_issued"] == 2  # the test's own, then the browser's


def test_request_post_sends_the_form_and_follows_the_redirect(server: Server, emulator: EmulatorThread) -> None:
    """`request.post` sends `postData` urlencoded, follows the 302 and returns the cookies it set."""
    AuthCache.open().put(make_record("127.0.0.1", emulator.url))
    status, body = server.v1(cmd="request.post", url=emulator.url + "/login", postData="username=ada&password=pw")
    assert status == 200, body
    assert body["solution"]["url"] == emulator.url + "/"
    assert "authjs.session-token" in {c["name"] for c in body["solution"]["cookies"]}


def test_request_cookies_are_sent(server: Server, emulator: EmulatorThread) -> None:
    """`cookies` from the request go with the fetch (the emulator's last headers show them)."""
    AuthCache.open().put(make_record("127.0.0.1", emulator.url))
    status, body = server.v1(
        cmd="request.get", url=emulator.url + "/v1/models", cookies=[{"name": "extra", "value": "v42"}]
    )
    assert status == 200, body
    assert "extra=v42" in emulator.stats["last_headers"]["cookie"]


def test_errors_are_flaresolverr_500s(server: Server, emulator: EmulatorThread) -> None:
    """Bad commands, URLs, bodies and unknown sessions are HTTP 500 `status: error` with `Error: …` messages."""
    cases = [
        ({"cmd": "request.nope", "url": emulator.url}, "is invalid"),
        ({"url": emulator.url}, "'cmd' is mandatory"),
        ({"cmd": "request.get"}, "'url' is mandatory"),
        ({"cmd": "request.get", "url": "file:///etc/passwd"}, "http(s) URL"),
        ({"cmd": "request.get", "url": emulator.url, "session": "nobody-here"}, "doesn't exist"),
        ({"cmd": "sessions.destroy", "session": "nobody-here"}, "doesn't exist"),
        ({"cmd": "request.post", "url": emulator.url}, "'postData' is mandatory"),
        ({"cmd": "request.get", "url": emulator.url, "cookies": "a=b"}, "'cookies' must be"),
    ]
    for command, words in cases:
        status, body = server.v1(**command)
        assert status == 500, command
        assert body["status"] == "error" and body["message"].startswith("Error: ") and words in body["message"]
        assert {"startTimestamp", "endTimestamp", "version"} <= set(body)
    status, _, body = server.call("POST", "/v1", raw=b"{not json")
    assert status == 500 and body["status"] == "error" and "not valid JSON" in body["message"]
    assert emulator.stats["clearances_issued"] == 0


def test_max_timeout_is_enforced_end_to_end(server: Server, emulator: EmulatorThread) -> None:
    """A cold request with a short `maxTimeout` fails with FlareSolverr's timeout error in about that time."""
    emulator.configure(think_ms=5000)
    status, body = server.v1(cmd="request.get", url=emulator.url + "/", maxTimeout=500)
    assert status == 500
    assert body["message"] == "Error: Error solving the challenge. Timeout after 0.5 seconds."
    assert body["endTimestamp"] - body["startTimestamp"] < 3000


def test_max_timeout_is_enforced_on_the_fetch_too(server: Server, black_hole: str) -> None:
    """A fresh record's fetch of a page that never comes fails with FlareSolverr's timeout error at `maxTimeout`."""
    AuthCache.open().put(make_record("127.0.0.1", origin=black_hole))  # fresh: no browser run, only the fetch
    status, body = server.v1(cmd="request.get", url=black_hole + "/slow", maxTimeout=500)
    assert status == 500 and body["status"] == "error"
    assert body["message"] == "Error: Error solving the challenge. Timeout after 0.5 seconds."
    assert body["endTimestamp"] - body["startTimestamp"] < 3000
    assert server.state.runs.started == 0


def test_sessions_create_list_destroy(server: Server) -> None:
    """Sessions are created (once), listed and destroyed with FlareSolverr's messages."""
    status, body = server.v1(cmd="sessions.create", session="s1")
    assert (status, body["message"], body["session"]) == (200, "Session created successfully.", "s1")
    status, body = server.v1(cmd="sessions.create", session="s1")
    assert body["message"] == "Session already exists."
    status, body = server.v1(cmd="sessions.create")
    generated = body["session"]
    status, body = server.v1(cmd="sessions.list")
    assert sorted(body["sessions"]) == sorted(["s1", generated])
    status, body = server.v1(cmd="sessions.destroy", session="s1")
    assert (status, body["message"]) == (200, "The session has been removed.")
    assert server.v1(cmd="sessions.list")[1]["sessions"] == [generated]


def test_sessions_bind_their_proxy_without_cross_talk(
    server: Server, emulator: EmulatorThread, proxy_factory: Callable[..., ProxyThread]
) -> None:
    """Concurrent requests of two sessions each go through their own session's proxy, and the records say so."""
    first, second = proxy_factory(username="u1", password="p1"), proxy_factory(username="u2", password="p2")
    for name, proxy, user, password in (("one", first, "u1", "p1"), ("two", second, "u2", "p2")):
        binding = {"url": proxy.url, "username": user, "password": password}
        status, body = server.v1(cmd="sessions.create", session=name, proxy=binding)
        assert status == 200, body
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(
                lambda i: server.v1(cmd="request.get", url=emulator.url + "/", session="one" if i % 2 else "two"),
                range(8),
            )
        )
    assert [status for status, _ in results] == [200] * 8, results
    cache = AuthCache.open()
    one, two = cache.get("one"), cache.get("two")
    assert one is not None and two is not None
    assert one.proxy == first.url_for("u1", "p1") and two.proxy == second.url_for("u2", "p2")
    assert first.stats["authenticated"] > 0 and second.stats["authenticated"] > 0
    assert server.v1(cmd="sessions.list")[1]["sessions"] == ["one", "two"]
