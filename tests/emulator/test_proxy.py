"""The test proxy itself: 407 without the right credentials, forwarding and CONNECT when they are right."""

from __future__ import annotations

import base64
import socket

from tests.emulator._proxy import ProxyThread
from tests.emulator._server import EmulatorThread


def exchange(proxy: ProxyThread, request: str, then: bytes = b"") -> bytes:
    """Send one raw request to the proxy (and `then`, once it answered) and read until it closes or pauses."""
    host, port = proxy.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request.encode())
        data = sock.recv(65536)
        if then:
            sock.sendall(then)
        chunks = [data]
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_refuses_without_or_with_wrong_credentials(emulator: EmulatorThread, auth_proxy: ProxyThread) -> None:
    """No or wrong Proxy-Authorization gets 407 with a Basic challenge, and nothing reaches the emulator."""
    target = emulator.url + "/__emulator__/stats"
    plain = exchange(auth_proxy, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    wrong = basic(auth_proxy.username or "", "nope")
    bad = exchange(
        auth_proxy, f"GET {target} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: {wrong}\r\nConnection: close\r\n\r\n"
    )
    for answer in (plain, bad):
        assert answer.startswith(b"HTTP/1.1 407 ")
        assert b'Proxy-Authenticate: Basic realm="harvest-test-proxy"' in answer
    stats = auth_proxy.stats
    assert stats["refused"] == 2 and stats["refused_with_credentials"] == 1 and stats["forwarded"] == 0


def test_forwards_and_tunnels_with_credentials(emulator: EmulatorThread, auth_proxy: ProxyThread) -> None:
    """The right credentials forward an absolute-URI request and open a CONNECT tunnel, both to loopback."""
    auth = basic(auth_proxy.username or "", auth_proxy.password)
    target = emulator.url + "/__emulator__/stats"
    answer = exchange(auth_proxy, f"GET {target} HTTP/1.1\r\nHost: x\r\nProxy-Authorization: {auth}\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200 ") and b"clearances_issued" in answer
    authority = emulator.url.removeprefix("http://")
    tunnelled = exchange(
        auth_proxy,
        f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nProxy-Authorization: {auth}\r\n\r\n",
        then=f"GET /__emulator__/stats HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n".encode(),
    )
    assert tunnelled.startswith(b"HTTP/1.1 200 Connection established\r\n\r\n")
    assert b"clearances_issued" in tunnelled
    stats = auth_proxy.stats
    assert stats["authenticated"] == 2 and stats["forwarded"] == 1 and stats["tunnels"] == 1


def test_never_leaves_loopback(auth_proxy: ProxyThread) -> None:
    """A target off this machine is refused (403), even with the right credentials."""
    auth = basic(auth_proxy.username or "", auth_proxy.password)
    answer = exchange(auth_proxy, f"GET http://example.com/ HTTP/1.1\r\nProxy-Authorization: {auth}\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 403 ")
