"""`[daemon] listen` serves the `harvest serve` app from the daemon's process, beside its `/status`."""

from __future__ import annotations

import asyncio
from types import MappingProxyType

import aiohttp
import pytest

from cache import AuthCache
from harvester._config import parse_config
from harvester._exceptions import ConfigError
from harvester.daemon import Daemon, DaemonSettings
from tests.daemon._fakes import FakeHarvester
from tests.emulator import EmulatorThread
from tests.providers.conftest import make_record


async def test_daemon_listen_serves_flaresolverr_and_status(emulator: EmulatorThread) -> None:
    """One daemon process answers FlareSolverr's `/v1` from the cache and its own `/status` and `/metrics`."""
    cache = AuthCache.open()
    cache.put(make_record("127.0.0.1", emulator.url))
    settings = DaemonSettings(listen="127.0.0.1:0", providers=MappingProxyType({}))
    daemon = Daemon(settings, cache=cache, harvester_factory=lambda s: FakeHarvester(ttl=300.0))
    ports: list[int] = []
    up = asyncio.Event()

    def started(d: Daemon) -> None:
        assert d.server is not None
        ports.append(d.server.port)
        up.set()

    task = asyncio.get_running_loop().create_task(daemon.serve(started=started))
    await asyncio.wait_for(up.wait(), 30)
    base = f"http://127.0.0.1:{ports[0]}"
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{base}/v1", json={"cmd": "request.get", "url": emulator.url + "/"}) as response:
            answer = await response.json()
        async with session.get(f"{base}/status") as response:
            report = await response.json()
        async with session.get(f"{base}/metrics") as response:
            metrics = await response.text()
    daemon.request_exit()
    assert await asyncio.wait_for(task, 30) == 0
    assert answer["status"] == "ok" and "<title>Playground</title>" in answer["solution"]["response"]
    assert report["daemon"]["running"] is True
    assert (
        "harvest_browser_restarts_total" in metrics
        and 'harvest_serve_requests_total{outcome="200",route="/v1"}' in metrics
    )


async def test_daemon_listen_off_loopback_needs_a_token() -> None:
    """A daemon told to listen on 0.0.0.0 without a `[server]` token refuses to start, before any harvest."""
    settings = DaemonSettings(listen="0.0.0.0:0", providers=MappingProxyType({}), config=parse_config(""))
    daemon = Daemon(settings, cache=AuthCache.open(), harvester_factory=lambda s: FakeHarvester(ttl=300.0))
    with pytest.raises(ConfigError, match="without a token"):
        await daemon.serve()
