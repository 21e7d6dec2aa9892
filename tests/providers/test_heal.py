"""Healing with the real harvester and Chromium: a revoked session heals itself with one browser run."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cache import AuthCache
from providers import Cerebras, Cloudflare, FinishReason
from tests.emulator._server import EmulatorThread

from .conftest import MESSAGES

pytestmark = pytest.mark.slow


async def collect(gen: Any) -> list[Any]:
    return [item async for item in gen]


@pytest.fixture
def emu(emulator: EmulatorThread) -> EmulatorThread:
    """The emulator with a short challenge, so each browser run is quick."""
    emulator.configure(think_ms=50)
    return emulator


async def test_first_call_harvests_then_revoke_heals_once(emu: EmulatorThread, cache: AuthCache) -> None:
    """With no record the first call harvests; after a revoke the next call heals with exactly one more run."""
    items = await collect(Cerebras.create_async_generator("llama3.1-8b", MESSAGES, base_url=emu.url))
    assert FinishReason("stop") in items
    assert emu.stats["clearances_issued"] == 1
    first = cache.get("cerebras")
    assert first is not None
    assert emu.stats["last_user_agent"] == first.user_agent

    emu.revoke()
    items = await collect(Cerebras.create_async_generator("llama3.1-8b", MESSAGES, base_url=emu.url))
    assert FinishReason("stop") in items
    assert emu.stats["clearances_issued"] == 2
    second = cache.get("cerebras")
    assert second is not None and second.harvested_at > first.harvested_at
    headers = emu.stats["last_headers"]
    assert headers["user-agent"] == second.user_agent
    for name, value in second.headers.items():
        if name.lower().startswith("sec-ch-ua"):
            assert headers[name.lower()] == value


async def test_fifty_concurrent_calls_heal_with_one_browser_run(emu: EmulatorThread, cache: AuthCache) -> None:
    """50 calls that all hit a challenge after a revoke cause exactly one browser run between them."""
    await collect(Cloudflare.create_async_generator("", MESSAGES, base_url=emu.url))
    assert emu.stats["clearances_issued"] == 1
    emu.revoke()

    results = await asyncio.gather(
        *[collect(Cloudflare.create_async_generator("", MESSAGES, base_url=emu.url)) for _ in range(50)]
    )
    assert all(FinishReason("stop") in items for items in results)
    assert emu.stats["clearances_issued"] == 2
