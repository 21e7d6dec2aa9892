"""The emulator's stores of issued secrets stay bounded however long it runs (a daemon soak harvests for hours)."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
import orjson
import pytest

from tests.emulator import EmulatorThread
from tests.emulator import _state as state_module
from tests.emulator._challenge import solve
from tests.emulator._state import EmulatorConfig, State

from .conftest import UA


async def answer_challenge(client: aiohttp.ClientSession, url: str) -> None:
    """Do what the challenge page's JS does: load it, solve its nonce and post the answer."""
    async with client.get(url + "/") as resp:
        html = await resp.text()
        assert resp.status == 403, html[:200]
    nonce = html.split('"cNounce": "', 1)[1].split('"', 1)[0]
    body = orjson.dumps({"nonce": nonce, "answer": solve(nonce)})
    async with client.post(url + "/cdn-cgi/challenge-platform/answer", data=body) as resp:
        assert resp.status == 200, await resp.text()


async def test_expired_clearances_are_dropped_as_new_ones_are_issued(
    emulator_factory: Callable[..., EmulatorThread], client: aiohttp.ClientSession
) -> None:
    """300 real challenge answers with a zero clearance_ttl leave at most one clearance stored, not 300."""
    emu = emulator_factory(clearance_ttl=0.0, think_ms=0)
    for _ in range(300):
        # Each harvest runs in a fresh browser context, so an old clearance is never shown (and checked) again.
        client.cookie_jar.clear()
        await answer_challenge(client, emu.url)
    assert emu.stats["clearances_issued"] == 300
    assert emu.sizes["clearances"] <= 1
    assert emu.sizes["nonces"] == 0  # each answered nonce is consumed


def test_live_clearances_still_count_and_expire_as_before() -> None:
    """Pruning keeps every live clearance valid; an expired one stays invalid."""
    state = State(EmulatorConfig(clearance_ttl=3600.0))
    live = [state.issue_clearance(UA) for _ in range(50)]
    state.configure({"clearance_ttl": 0.0})
    expired = state.issue_clearance(UA)
    state.issue_clearance(UA)  # prunes `expired`
    assert all(state.clearance_valid(token, UA) for token in live)
    assert not state.clearance_valid(expired, UA)
    assert state.sizes()["clearances"] <= 51


def test_every_store_keeps_at_most_max_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Live nonces, clearances, API keys, logins and images are capped, the oldest forgotten first."""
    monkeypatch.setattr(state_module, "MAX_ENTRIES", 20)
    state = State(EmulatorConfig(clearance_ttl=3600.0))
    clearances = [state.issue_clearance(UA) for _ in range(100)]
    keys = [state.api_key_for(f"holder-{i}") for i in range(100)]
    logins = [state.login(f"user-{i}") for i in range(100)]
    images = [state.add_image() for _ in range(100)]
    for _ in range(100):
        state.new_nonce()
    assert state.sizes() == {"nonces": 20, "clearances": 20, "api_keys": 20, "logins": 20, "images": 20}
    assert state.clearance_valid(clearances[-1], UA) and not state.clearance_valid(clearances[0], UA)
    assert state.api_key_valid(keys[-1]) and not state.api_key_valid(keys[0])
    assert state.login_user(logins[-1]) == "user-99" and state.login_user(logins[0]) is None
    assert state.has_image(images[-1]) and not state.has_image(images[0])
    assert state.stats()["clearances_issued"] == 100 and state.stats()["api_keys_issued"] == 100


def test_revoke_and_reset_empty_every_store() -> None:
    """revoke forgets clearances and keys (and their validity); reset forgets everything."""
    state = State()
    key = state.api_key_for("holder")
    state.issue_clearance(UA)
    state.login("ada")
    state.add_image()
    state.new_nonce()
    state.revoke()
    assert not state.api_key_valid(key)
    assert state.sizes() == {"nonces": 1, "clearances": 0, "api_keys": 0, "logins": 1, "images": 1}
    state.reset()
    assert set(state.sizes().values()) == {0}
