"""The server's auth, limits, metrics and logs, over real HTTP."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from cache import AuthCache
from harvester._config import parse_config
from harvester._exceptions import ConfigError
from harvester.serve import ServeSettings
from tests.emulator import EmulatorThread
from tests.providers.conftest import make_record

from .conftest import TOKEN, Server


def test_token_is_required_when_set_and_compared_exactly(serve_factory: Callable[..., Server]) -> None:
    """With a token, every route but the health ones needs `Authorization: Bearer TOKEN`, in each API's shape."""
    server = serve_factory(token=TOKEN)
    status, _, body = server.call("POST", "/v1", {"cmd": "sessions.list"}, token=None)
    assert status == 401 and body["status"] == "error" and body["message"].startswith("Error: ")
    status, _, body = server.call("GET", "/v1/models", token=TOKEN + "x")
    assert status == 401 and body["error"]["type"] == "authentication_error"
    status, _, body = server.call("GET", "/metrics", token=TOKEN[:-1])
    assert status == 401
    status, _, body = server.call("POST", "/v1", {"cmd": "sessions.list"})
    assert status == 200 and body["sessions"] == []
    assert server.call("GET", "/healthz", token=None)[0] == 200


def test_sessions_routes_need_a_token_even_on_loopback(
    serve_factory: Callable[..., Server], emulator: EmulatorThread
) -> None:
    """`/v1/sessions` refuses without a configured token on loopback, and serves the records with one."""
    open_server = serve_factory()
    status, _, body = open_server.call("GET", "/v1/sessions")
    assert status == 403 and "token" in body["error"]["message"]
    assert open_server.call("POST", "/v1", {"cmd": "sessions.list"})[0] == 200  # the rest is open on loopback

    record = make_record("127.0.0.1", emulator.url)
    AuthCache.open().put(record)
    server = serve_factory(token=TOKEN)
    status, _, listing = server.call("GET", "/v1/sessions")
    assert status == 200 and [r["provider"] for r in listing] == ["127.0.0.1"]
    assert record.cookies[0].value not in str(listing)
    status, _, body = server.call("GET", "/v1/sessions/127.0.0.1")
    assert status == 200 and body == record.to_json()
    status, _, body = server.call("GET", "/v1/sessions/nope")
    assert status == 404 and body["error"]["code"] == "not_found"


def test_non_loopback_without_token_is_refused_unless_no_auth() -> None:
    """Serving 0.0.0.0 needs a token, or `--no-auth`."""
    config = parse_config("")
    with pytest.raises(ConfigError, match="without a token"):
        ServeSettings.resolve(config, listen="0.0.0.0:8191", environ={})
    assert ServeSettings.resolve(config, listen="0.0.0.0:8191", no_auth=True, environ={}).no_auth
    settings = ServeSettings.resolve(config, listen="0.0.0.0:8191", environ={"HARVEST_SERVER_TOKEN": "tok-9q8w"})
    assert settings.token == "tok-9q8w" and "tok-9q8w" not in repr(settings)
    assert ServeSettings.resolve(config, environ={}).port == 8191  # FlareSolverr's port by default


def test_token_sources_in_order(tmp_path: pytest.TempPathFactory) -> None:
    """The flag beats the environment, which beats `[server] token`, which beats `token_file`."""
    file = tmp_path / "token"  # type: ignore[operator]
    file.write_text("from-file\n")
    config = parse_config(f'[server]\ntoken_file = "{file}"\n')
    assert ServeSettings.resolve(config, environ={}).token == "from-file"
    config = parse_config(f'[server]\ntoken = "from-config"\ntoken_file = "{file}"\n')
    assert ServeSettings.resolve(config, environ={}).token == "from-config"
    assert ServeSettings.resolve(config, environ={"HARVEST_SERVER_TOKEN": "env"}).token == "env"
    assert ServeSettings.resolve(config, token="flag", environ={"HARVEST_SERVER_TOKEN": "env"}).token == "flag"


def test_body_over_the_limit_is_413(serve_factory: Callable[..., Server]) -> None:
    """A body past `max_body` is refused with 413 in the route's shape."""
    server = serve_factory(max_body=1000)
    status, _, body = server.call("POST", "/v1", raw=b'{"cmd": "' + b"x" * 2000 + b'"}')
    assert status == 413 and body["status"] == "error"
    status, _, body = server.call("POST", "/v1/chat/completions", raw=b"{" + b" " * 2000 + b"}")
    assert status == 413 and body["error"]["type"] == "invalid_request_error"


def _raw_post(server: Server, path: str, parts: list[bytes], *, chunked: bool, pause: float | None) -> bytes:
    """POST ``parts`` as the body over a raw socket (chunked, or with a Content-Length): in one send with the
    head (``pause`` None), or each part ``pause`` seconds after the one before."""
    host, port = server.url.removeprefix("http://").split(":")
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % sum(map(len, parts))
    head = b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s\r\n\r\n" % (path.encode(), framing)
    pieces = [b"%x\r\n%s\r\n" % (len(part), part) for part in parts] + [b"0\r\n\r\n"] if chunked else parts
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        if pause is None:
            sock.sendall(head + b"".join(pieces))
        else:
            sock.sendall(head)
            for piece in pieces:
                time.sleep(pause)
                sock.sendall(piece)
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith((b"}", b"]")):
            data = sock.recv(65536)
            if not data:
                break
            received += data
    return received


@pytest.mark.parametrize("pause", [None, 0.2])
def test_a_chunked_body_is_held_to_the_limit_whether_it_comes_at_once_or_later(
    serve_factory: Callable[..., Server], pause: float | None
) -> None:
    """A chunked body (no Content-Length to check first) over `max_body` is 413, whether it came with the head or
    after it; one within the limit is read whole."""
    server = serve_factory(max_body=1000)
    big = [b'{"cmd": "', b"x" * 600, b"x" * 600, b'"}']
    assert _raw_post(server, "/v1", big, chunked=True, pause=pause).startswith(b"HTTP/1.1 413")
    small = [b'{"cmd": ', b'"sessions.list"}']
    answer = _raw_post(server, "/v1", small, chunked=True, pause=pause)
    assert answer.startswith(b"HTTP/1.1 200") and b'"sessions":[]' in answer
    answer = _raw_post(server, "/v1", small, chunked=False, pause=pause)
    assert answer.startswith(b"HTTP/1.1 200") and b'"sessions":[]' in answer


def test_a_silent_connection_is_closed_after_the_header_timeout(serve_factory: Callable[..., Server]) -> None:
    """A client that opens a connection and never finishes its request head is cut off at `header_timeout`."""
    server = serve_factory(header_timeout=0.5, idle_timeout=30)
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never the blank line
        started = time.monotonic()
        assert sock.recv(1024) == b""  # closed by the server
        assert time.monotonic() - started < 5


def test_an_idle_keep_alive_connection_is_closed(serve_factory: Callable[..., Server]) -> None:
    """After a request, a connection that stays idle past `idle_timeout` is closed."""
    server = serve_factory(header_timeout=30, idle_timeout=0.5)
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b'{"status":"ok"}' in sock.recv(4096)
        started = time.monotonic()
        assert sock.recv(1024) == b""
        assert time.monotonic() - started < 5


def test_browser_run_cap_answers_503_with_retry_after(
    serve_factory: Callable[..., Server], emulator: EmulatorThread
) -> None:
    """With one browser run allowed, a cold request for a second site while the first runs gets 503 + Retry-After."""
    server = serve_factory(max_browser_runs=1, retry_after=7)
    emulator.configure(think_ms=1500)
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(server.v1, cmd="request.get", url=emulator.url + "/")
        deadline = time.monotonic() + 10
        while server.state.runs.in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        other = emulator.url.replace("127.0.0.1", "localhost")  # another host: another record, another run
        status, headers, body = server.call("POST", "/v1", {"cmd": "request.get", "url": other + "/"})
        assert status == 503 and headers["Retry-After"] == "7" and body["status"] == "error"
        assert first.result()[0] == 200


def test_request_cap_answers_503(serve_factory: Callable[..., Server], emulator: EmulatorThread) -> None:
    """Past `max_requests` in flight, requests get 503 with Retry-After instead of queueing."""
    server = serve_factory(max_requests=1)
    emulator.configure(think_ms=1500)
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(server.v1, cmd="request.get", url=emulator.url + "/")
        deadline = time.monotonic() + 10
        while server.state.requests.in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        status, headers, body = server.call("GET", "/v1/models")
        assert status == 503 and headers["Retry-After"] == "1" and body["error"]["type"] == "overloaded_error"
        assert first.result()[0] == 200


def test_metrics_count_requests_per_route_and_outcome(server: Server) -> None:
    """`/metrics` has a counter and a histogram per route and outcome."""
    server.v1(cmd="sessions.list")
    server.v1(cmd="nope")
    status, _, text = server.call("GET", "/metrics")
    assert status == 200
    assert 'harvest_serve_requests_total{outcome="200",route="/v1"} 1.0' in text
    assert 'harvest_serve_requests_total{outcome="500",route="/v1"} 1.0' in text
    assert 'harvest_serve_request_duration_seconds_count{outcome="200",route="/v1"} 1.0' in text


def test_no_secret_in_any_log_line(
    serve_factory: Callable[..., Server], emulator: EmulatorThread, caplog: pytest.LogCaptureFixture
) -> None:
    """Tokens, cookie values and proxy passwords never reach a log line, whatever the request."""
    record = make_record("127.0.0.1", emulator.url)
    AuthCache.open().put(record)
    server = serve_factory(token=TOKEN)
    with caplog.at_level(logging.DEBUG):
        server.v1(cmd="request.get", url=emulator.url + "/?token=sekrit-query", bogus_field="sekrit-value")
        server.v1(
            cmd="request.get",
            url=emulator.url + "/",
            proxy={"url": "http://127.0.0.1:9", "username": "u", "password": "sekrit-pass"},
        )
        server.v1(cmd="request.nope", url=emulator.url + "/?token=sekrit-query")
        server.call("GET", "/v1/models", token="sekrit-wrong-token")
    text = "\n".join(r.getMessage() + str(getattr(r, "fields", "")) for r in caplog.records)
    assert "serve.v1.ignored" in text  # unknown fields are logged, by name
    for secret in (TOKEN, record.cookies[0].value, "sekrit"):
        assert secret not in text


def test_connections_past_the_cap_are_closed_at_once(serve_factory: Callable[..., Server]) -> None:
    """With `max_connections` open, one more connection is closed at once while the open ones keep working."""
    server = serve_factory(header_timeout=30, idle_timeout=30, max_connections=3)
    host, port = server.url.removeprefix("http://").split(":")
    held = [socket.create_connection((host, int(port)), timeout=10) for _ in range(3)]
    try:
        # The server has accepted the three once each of them got an answer.
        for sock in held:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b'{"status":"ok"}' in sock.recv(4096)
        with socket.create_connection((host, int(port)), timeout=10) as extra:
            started = time.monotonic()
            assert extra.recv(1024) == b""  # refused: closed before it could send anything
            assert time.monotonic() - started < 5
        held[0].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b'{"status":"ok"}' in held[0].recv(4096)
    finally:
        for sock in held:
            sock.close()
