"""`/v1/sessions/{name}/refresh`: a single-flight harvest over HTTP that answers the new record."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from cache import AuthCache
from tests.emulator import EmulatorThread
from tests.providers.conftest import make_record

from .conftest import TOKEN, Server


def test_refresh_harvests_once_for_concurrent_callers(
    serve_factory: Callable[..., Server], emulator: EmulatorThread
) -> None:
    """Three concurrent refreshes of one record make one browser run and all answer the new record."""
    old = make_record("127.0.0.1", emulator.url)
    AuthCache.open().put(old)
    server = serve_factory(token=TOKEN)
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = list(pool.map(lambda _: server.call("POST", "/v1/sessions/127.0.0.1/refresh"), range(3)))
    assert [status for status, _, _ in answers] == [200] * 3, answers[0]
    records = [body for _, _, body in answers]
    assert records[0] == records[1] == records[2] == AuthCache.open().get("127.0.0.1").to_json()  # type: ignore[union-attr]
    assert records[0]["harvested_at"] > old.to_json()["harvested_at"]
    assert emulator.stats["clearances_issued"] == 2  # the test's own clearance, then one browser run


def test_refresh_of_unknown_or_bad_names(serve_factory: Callable[..., Server]) -> None:
    """A name with no recipe and no cached origin is 404; a name that cannot be a record is 400."""
    server = serve_factory(token=TOKEN)
    status, _, body = server.call("POST", "/v1/sessions/nobody/refresh")
    assert status == 404 and body["error"]["code"] == "not_found"
    status, _, body = server.call("POST", "/v1/sessions/Bad!Name/refresh")
    assert status == 400 and body["error"]["code"] == "invalid_name"
