"""Running the emulator: `Emulator` on the caller's event loop, `EmulatorThread` on a loop of its own.

Both expose the same control surface (`url`, `configure`, `revoke`, `reset`, `stats`, `config`); the state is
lock-protected, so the thread variant can be driven from a synchronous test without hopping loops.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Any, Protocol, Self

from aiohttp import web

from ._app import create_app
from ._state import EmulatorConfig, State

# Streams still open at shutdown get this long to finish before aiohttp cancels them; tests stop servers
# mid-stream on purpose and should not wait for a dripping body.
_SHUTDOWN_GRACE = 0.25
_STOP_DEADLINE = 5.0


class _Controls:
    """The knobs and counters shared by both ways of running the emulator."""

    state: State
    _url: str | None = None

    @property
    def url(self) -> str:
        """Base URL, `http://127.0.0.1:PORT`, with no trailing slash."""
        if self._url is None:
            raise RuntimeError("the emulator is not running; use it as a context manager or call start()")
        return self._url

    @property
    def config(self) -> EmulatorConfig:
        """The live knobs (fault counters show what is still pending)."""
        return self.state.config

    @property
    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters (see the package docstring)."""
        return self.state.stats()

    def configure(self, **knobs: Any) -> EmulatorConfig:
        """Change knobs for the rest of the run; raises ValueError on an unknown knob or bad value."""
        return self.state.configure(knobs)

    def revoke(self) -> None:
        """Invalidate every clearance and issued API key."""
        self.state.revoke()

    def reset(self) -> None:
        """Restore the start-up knobs and clear faults, secrets and stats."""
        self.state.reset()

    @property
    def sizes(self) -> dict[str, int]:
        """How many entries each store of issued secrets holds (nonces, clearances, keys, logins, images)."""
        return self.state.sizes()


class Emulator(_Controls):
    """The provider emulator on the current event loop: `async with Emulator(config) as emu: emu.url`."""

    def __init__(self, config: EmulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state = State(config or EmulatorConfig())
        self._host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Bind and serve; returns the base URL (port 0 picks a free port)."""
        if self._runner is not None:
            raise RuntimeError("emulator already started")
        runner = web.AppRunner(create_app(self.state), access_log=None, shutdown_timeout=_SHUTDOWN_GRACE)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port, reuse_address=True)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self._url = f"http://{host}:{port}"
        return self._url

    async def stop(self) -> None:
        """Stop serving and close every connection, within a deadline."""
        runner, self._runner = self._runner, None
        self._url = None
        if runner is not None:
            await asyncio.wait_for(runner.cleanup(), timeout=_STOP_DEADLINE)

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


class _AsyncServer(Protocol):
    @property
    def url(self) -> str: ...

    async def start(self) -> str: ...
    async def stop(self) -> None: ...


class ServerThread:
    """Runs an async server (``start()``/``stop()`` coroutines and a ``url``) on its own event loop in a daemon
    thread, for sync and async tests alike. ``start`` waits until it listens; ``stop`` joins within a deadline."""

    _what = "server"

    def __init__(self, server: _AsyncServer) -> None:
        self._server = server
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def start(self, timeout: float = _STOP_DEADLINE) -> str:
        """Start the thread and wait (up to `timeout`) until the server listens; returns its URL."""
        if self._thread is not None:
            raise RuntimeError(f"{self._what} thread already started")
        self._thread = threading.Thread(target=self._run, name=f"harvest-{self._what}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"{self._what} did not start within {timeout}s")
        if self._error is not None:
            self._thread.join(timeout)
            raise RuntimeError(f"{self._what} failed to start") from self._error
        return self._server.url

    def stop(self, timeout: float = _STOP_DEADLINE * 2) -> None:
        """Stop the loop (the thread closes the server and loop itself) and join within `timeout`."""
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"{self._what} thread did not stop within {timeout}s")
        self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            try:
                loop.run_until_complete(self._server.start())
            except BaseException as exc:
                self._error = exc
                return
            finally:
                self._ready.set()
            loop.run_forever()
            loop.run_until_complete(self._server.stop())
            # Handlers not finished (a dripping stream, an open tunnel) are cancelled, not left pending.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class EmulatorThread(ServerThread, _Controls):
    """The emulator on a background thread with its own loop, for sync and async tests alike."""

    _what = "emulator"

    def __init__(self, config: EmulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._emulator = Emulator(config, host=host, port=port)
        self.state = self._emulator.state
        super().__init__(self._emulator)

    def start(self, timeout: float = _STOP_DEADLINE) -> str:
        """Start the thread and wait (up to `timeout`) until the server listens; returns the base URL."""
        self._url = super().start(timeout)
        return self._url

    def stop(self, timeout: float = _STOP_DEADLINE * 2) -> None:
        """Stop the loop and join the thread within `timeout`."""
        super().stop(timeout)
        self._url = None
