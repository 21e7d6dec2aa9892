"""A real ``redis-server`` for tests: a child process on a free loopback port, in a temp dir, with a password.

Fixtures: ``redis_server`` (one per session), ``redis_location`` (a URL with a fresh ``?prefix=`` per test, so tests
never see each other's keys) and ``own_redis`` (a server of the test's own, for fault tests that kill it).
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` child: ``start()``, ``kill()`` (SIGKILL), ``restart()`` on the same port, ``stop()``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.password = secrets.token_hex(12)
        self.dir = tempfile.mkdtemp(prefix="harvest-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, prefix: str | None = None, *, password: str | None = None, lock_ttl: float | None = 2.0) -> str:
        """The cache URL; tests use a 2 s lock TTL so a killed holder's lock frees quickly."""
        params = [f"prefix={prefix}"] if prefix else []
        if lock_ttl is not None:
            params.append(f"lock_ttl={lock_ttl:g}")
        query = "?" + "&".join(params) if params else ""
        return f"redis://:{password or self.password}@127.0.0.1:{self.port}/0{query}"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir, "--save", "",
             "--appendonly", "no", "--requirepass", self.password, "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                    if b"PONG" in sock.recv(100):
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer within 10 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server (with a password) for the whole session."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_location(redis_server: RedisServer) -> str:
    """A cache URL on the session's server with a prefix of this test's own."""
    return redis_server.url(f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, free to kill and restart."""
    server = RedisServer().start()
    yield server
    server.stop()
