"""The fast lane for streamed completions: what it takes, what it leaves to aiohttp, and that both answer alike."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from harvester.serve._app import LANE
from harvester.serve._lane import frame
from tests.emulator import EmulatorThread

from .conftest import TOKEN, Server
from .test_gateway import MESSAGES, REPLY, gateway  # noqa: F401  (the gateway fixture)

BODY = json.dumps({"model": "freenetfly/gpt-4", "messages": MESSAGES, "stream": True}).encode()


def _request(body: bytes = BODY, *, token: str = TOKEN, extra: str = "") -> bytes:
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{extra}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _taken(server: Server) -> int:
    return int(server.app.app[LANE].taken)


class _Connection:
    """One keep-alive connection that reads whole answers (a JSON one by its length, a stream to its last chunk)."""

    def __init__(self, server: Server) -> None:
        host, port = server.url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.buffer = b""

    def __enter__(self) -> _Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _more(self) -> None:
        data = self.sock.recv(65536)
        assert data, self.buffer
        self.buffer += data

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        """The next answer: (status, headers with lower-case names, body with any chunked framing removed)."""
        status = 100
        while status < 200:  # an interim answer (100 Continue) comes before the answer
            while b"\r\n\r\n" not in self.buffer:
                self._more()
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        if "content-length" in headers:
            size = int(headers["content-length"])
            while len(self.buffer) < size:
                self._more()
            body, self.buffer = self.buffer[:size], self.buffer[size:]
            return status, headers, body
        parts: list[bytes] = []
        at = 0  # where the next chunk's size line starts in the buffer
        while True:
            end = self.buffer.find(b"\r\n", at)
            if end < 0:
                self._more()
                continue
            size = int(self.buffer[at:end], 16)
            if len(self.buffer) < end + 2 + size + 2:
                self._more()
                continue
            parts.append(self.buffer[end + 2 : end + 2 + size])
            at = end + 2 + size + 2
            if size == 0:
                self.buffer = self.buffer[at:]
                return status, headers, b"".join(parts)

    def exchange(self, request: bytes) -> tuple[int, dict[str, str], bytes]:
        self.sock.sendall(request)
        return self.answer()


def _deltas(events: bytes) -> list[Any]:
    """The stream's events without their per-answer id and time; ``[DONE]`` as is."""
    out: list[Any] = []
    for event in events.split(b"\n\n"):
        if not event:
            continue
        payload = event.removeprefix(b"data: ")
        if payload == b"[DONE]":
            out.append("[DONE]")
            continue
        chunk = json.loads(payload)
        chunk.pop("id", None)
        chunk.pop("created", None)
        out.append(chunk)
    return out


def test_the_lane_answers_as_aiohttp_does(gateway: Server) -> None:  # noqa: F811
    """A whole streamed-completion request takes the lane, and its answer (head and events) is the one aiohttp's
    route gives the same request sent in two reads, which the lane leaves alone."""
    with _Connection(gateway) as conn:
        before = _taken(gateway)
        fast = [conn.exchange(_request()) for _ in range(2)]
        assert _taken(gateway) == before + 2
        request = _request()
        conn.sock.sendall(request[:40])
        time.sleep(0.05)
        conn.sock.sendall(request[40:])
        slow = conn.answer()
        assert _taken(gateway) == before + 2
    for status, headers, events in [*fast, slow]:
        assert status == 200
        assert headers["content-type"] == "text/event-stream" and headers["transfer-encoding"] == "chunked"
        assert "date" in headers and "server" in headers and "connection" not in headers
        assert _deltas(events) == _deltas(slow[2])
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in _deltas(events)[:-1]) == REPLY


def test_a_connection_mixes_the_lane_and_other_routes(gateway: Server) -> None:  # noqa: F811
    """Other routes on the same connection go to aiohttp, and the next whole completion request takes the lane
    again; two requests in one read go to aiohttp, in order, and that connection stays with aiohttp."""
    with _Connection(gateway) as conn:
        before = _taken(gateway)
        assert conn.exchange(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")[0] == 200
        assert conn.exchange(_request())[0] == 200
        assert (
            conn.exchange(
                b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
            )[0]
            == 200
        )
        assert conn.exchange(_request())[0] == 200
        assert _taken(gateway) == before + 2
    with _Connection(gateway) as conn:
        before = _taken(gateway)
        conn.sock.sendall(_request() + _request())
        first, second = conn.answer(), conn.answer()
        assert first[0] == second[0] == 200 and _deltas(first[2]) == _deltas(second[2])
        assert conn.exchange(_request())[0] == 200
        assert _taken(gateway) == before


def test_a_request_sent_during_a_lane_stream_is_answered_after_it(gateway: Server, emulator: EmulatorThread) -> None:  # noqa: F811
    """A second request that arrives while the lane streams the first waits for it, then gets its own answer."""
    emulator.configure(stream_chunks=8, drip_ms=50)
    with _Connection(gateway) as conn:
        before = _taken(gateway)
        conn.sock.sendall(_request())
        while b"chat.completion.chunk" not in conn.buffer:
            conn._more()
        conn.sock.sendall(_request())
        first, second = conn.answer(), conn.answer()
        assert _taken(gateway) == before + 2
    for status, _, events in (first, second):
        assert status == 200 and _deltas(events)[-1] == "[DONE]" and len(_deltas(events)) == 1 + 8 + 2


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (_request(token="wrong"), 401),
        (_request(b"{not json"), 400),
        (_request(json.dumps({"model": "freenetfly/gpt-4", "messages": [], "stream": True}).encode()), 400),
        (_request(json.dumps({"model": "freenetfly/gpt-4", "messages": MESSAGES}).encode()), 200),
        (_request(extra="Expect: 100-continue\r\n"), 200),
        (_request(extra="Connection: close\r\n"), 200),
    ],
)
def test_requests_the_lane_leaves_get_aiohttps_answer(gateway: Server, request_bytes: bytes, status: int) -> None:  # noqa: F811
    """A wrong token, a bad body, a request the gateway refuses, a non-streamed one, `Expect` or `Connection: close`:
    aiohttp answers it as before, and the lane takes none of them."""
    before = _taken(gateway)
    with _Connection(gateway) as conn:
        got, _, body = conn.exchange(request_bytes)
    assert got == status, body
    if status != 200:
        assert json.loads(body)["error"]["message"]
    assert _taken(gateway) == before


def test_a_provider_error_before_the_first_byte_is_the_same_http_error_on_the_lane(gateway: Server) -> None:  # noqa: F811
    """A model the provider does not know fails before any byte: the lane answers the 404 OpenAI error (status,
    headers, body) that aiohttp's route gives, and keeps the connection."""
    request = _request(json.dumps({"model": "nope/x", "messages": MESSAGES, "stream": True}).encode())
    with _Connection(gateway) as conn:
        before = _taken(gateway)
        fast = conn.exchange(request)
        assert conn.exchange(_request())[0] == 200  # still open, and the lane still takes it
        assert _taken(gateway) == before + 2
        conn.sock.sendall(request[:40])  # in two reads: aiohttp's
        time.sleep(0.05)
        conn.sock.sendall(request[40:])
        slow = conn.answer()
        assert _taken(gateway) == before + 2
    assert fast[0] == slow[0] == 404
    assert json.loads(fast[2]) == json.loads(slow[2]) and json.loads(fast[2])["error"]["code"] == "model_not_found"
    assert {k: v for k, v in fast[1].items() if k != "date"} == {k: v for k, v in slow[1].items() if k != "date"}


def test_a_lane_stream_longer_than_the_idle_timeout_is_not_cut(
    serve_factory: Callable[..., Server],
    emulator: EmulatorThread,
    gateway: Server,  # noqa: F811  (the emulator-based providers and records)
) -> None:
    """The keep-alive timeout closes idle connections only: a lane stream running past it ends whole, and the
    connection is closed once it has then been idle that long."""
    server = serve_factory(token=TOKEN, idle_timeout=0.4)
    emulator.configure(stream_chunks=12, drip_ms=100)
    with _Connection(server) as conn:
        status, _, events = conn.exchange(_request())
        assert status == 200 and _deltas(events)[-1] == "[DONE]" and len(_deltas(events)) == 1 + 12 + 2
        assert _taken(server) == 1
        started = time.monotonic()
        assert conn.sock.recv(1024) == b""  # then closed for idleness
        assert time.monotonic() - started < 5


def test_stopping_the_server_drains_a_lane_stream(
    serve_factory: Callable[..., Server],
    emulator: EmulatorThread,
    gateway: Server,  # noqa: F811
) -> None:
    """A lane stream in flight when the server stops is sent to its end, then the connection is closed."""
    server = serve_factory(token=TOKEN, drain_timeout=10)
    emulator.configure(stream_chunks=10, drip_ms=100)
    with _Connection(server) as conn:
        conn.sock.sendall(_request())
        while b"chat.completion.chunk" not in conn.buffer:
            conn._more()
        stopping = threading.Thread(target=server.thread.stop, kwargs={"timeout": 30})
        stopping.start()
        status, _, events = conn.answer()
        stopping.join(30)
        assert status == 200 and _deltas(events)[-1] == "[DONE]"
        assert conn.sock.recv(1024) == b""
    assert not stopping.is_alive()


def test_a_lane_stream_waits_for_a_slow_client(gateway: Server, emulator: EmulatorThread) -> None:  # noqa: F811
    """A client that does not read makes the lane wait (the bytes queued for it stay near the high-water mark,
    not the whole answer); once it reads, the whole stream arrives."""
    emulator.configure(stream_chunks=20_000)
    runner = gateway.app._runner
    assert runner is not None and runner.server is not None
    aiohttp_server = runner.server

    async def queued() -> int:
        return max(
            (h.transport.get_write_buffer_size() for h in aiohttp_server.connections if h.transport is not None),
            default=0,
        )

    with _Connection(gateway) as conn:
        before = _taken(gateway)
        conn.sock.sendall(_request())
        most = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            most = max(most, gateway.run(queued()))
            time.sleep(0.05)
        assert 64 * 1024 <= most < 512 * 1024  # it filled up to the mark, and no further
        status, _, events = conn.answer()
        assert _taken(gateway) == before + 1
    deltas = _deltas(events)
    assert status == 200 and deltas[-1] == "[DONE]" and len(deltas) == 1 + 20_000 + 2


def test_frame_reads_exactly_one_whole_request() -> None:
    """`frame` accepts one whole request with a Content-Length body (or none), and nothing else."""
    one = _request()
    assert frame(one) is not None
    assert frame(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") is not None
    assert frame(one[:-1]) is None  # half a body
    assert frame(one + one) is None  # two requests
    assert frame(one[:30]) is None  # half a head
    assert frame(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n") is None
    assert frame(b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx") is None
    assert frame(b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\nx") is None
