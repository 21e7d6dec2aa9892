"""Fixtures for the server tests: the real app on a background thread (its own loop, so sync clients such as
the openai SDK and `curl` work), an isolated cache, and the harvester tests' check for leftover browsers."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
import stamina

from cache import AuthCache
from harvester._config import Config
from harvester.serve import Limits, ServeApp, ServeSettings, ServeState
from tests.emulator._server import ServerThread
from tests.harvester.conftest import harvest_env, no_leftovers  # noqa: F401  (no Chromium left behind)

TOKEN = "test-token-3f9a1c"


class _Serving:
    """``ServeApp`` with the start()/stop()/url shape ``ServerThread`` runs."""

    def __init__(self, state: ServeState) -> None:
        self.state = state
        self.app = ServeApp(state)

    @property
    def url(self) -> str:
        return self.app.url

    async def start(self) -> str:
        await self.app.start()
        return self.app.url

    async def stop(self) -> None:
        await self.app.stop()


class Server:
    """A running server: ``url``, its ``state`` and small JSON helpers (sync, via urllib)."""

    def __init__(self, thread: ServerThread, serving: _Serving, token: str | None) -> None:
        self.thread = thread
        self.state = serving.state
        self.app = serving.app
        self.url = serving.url
        self.token = token

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = "default",
        raw: bytes | None = None,
        timeout: float = 60.0,
    ) -> tuple[int, dict[str, str], Any]:
        """Send one request; return (status, headers, JSON body or text)."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        bearer = self.token if token == "default" else token
        if bearer:
            request.add_header("Authorization", f"Bearer {bearer}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, headers, payload = response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            status, headers, payload = exc.code, dict(exc.headers), exc.read()
        try:
            return status, headers, json.loads(payload)
        except ValueError:
            return status, headers, payload.decode()

    def v1(self, **command: Any) -> tuple[int, Any]:
        """One FlareSolverr command; return (status, body)."""
        status, _, body = self.call("POST", "/v1", command)
        return status, body

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        """Run a coroutine on the server's loop (to read its state safely)."""
        loop = self.thread._loop
        assert loop is not None
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


@pytest.fixture(autouse=True)
def stamina_testing() -> Iterator[None]:
    """Provider retries without waits, so fault tests run fast."""
    with stamina.set_testing(True, attempts=2):
        yield


@pytest.fixture
def serve_factory() -> Iterator[Callable[..., Server]]:
    """Start servers: `serve_factory(token=..., limits=Limits(...), default_provider=...)`; all stop at teardown."""
    started: list[ServerThread] = []

    def make(
        *,
        token: str | None = None,
        config: Config | None = None,
        host: str = "127.0.0.1",
        no_auth: bool = False,
        **limits: Any,
    ) -> Server:
        settings = ServeSettings(
            host=host,
            port=0,
            token=token,
            no_auth=no_auth,
            default_provider=limits.pop("default_provider", None),
            limits=replace(Limits(), **limits),
        )
        state = ServeState(settings, cache=AuthCache.open(), config=config or Config())
        serving = _Serving(state)
        thread = ServerThread(serving)
        thread.start()
        started.append(thread)
        return Server(thread, serving, token)

    yield make
    for thread in reversed(started):
        thread.stop(timeout=30)


@pytest.fixture
def server(serve_factory: Callable[..., Server]) -> Server:
    """A server on loopback with no token."""
    return serve_factory()


@pytest.fixture
def black_hole() -> Iterator[str]:
    """The URL of a server that accepts connections, reads what comes and never answers (a hung upstream)."""
    import selectors
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(listener, selectors.EVENT_READ)
            while not stop.is_set():
                for key, _ in selector.select(timeout=0.1):
                    if key.fileobj is listener:
                        conn, _ = listener.accept()
                        conn.setblocking(False)
                        held.append(conn)
                        selector.register(conn, selectors.EVENT_READ)
                    else:
                        conn = key.fileobj  # type: ignore[assignment]
                        try:
                            data = conn.recv(65536)
                        except OSError:
                            data = b""
                        if not data:
                            selector.unregister(conn)

    thread = threading.Thread(target=serve, name="black-hole", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        listener.close()
