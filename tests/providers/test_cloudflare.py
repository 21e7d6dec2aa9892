"""Cloudflare over both protocols against the emulator: the agent WebSocket (default) and `/api/inference`."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cache import AuthCache
from providers import (
    Client,
    Cloudflare,
    FinishReason,
    FreeNetfly,
    MissingAuthError,
    ProviderTimeout,
    StreamError,
    Usage,
)
from providers._cloudflare import resolve_protocol
from tests.emulator._server import EmulatorThread

from .conftest import CLIENT_HINTS, MESSAGES, USER_AGENT, make_record

REPLY = "Hello from the cloudflare emulator. You said: hi there"
ROUTE = {"agent": "/agents/playground", "inference": "/api/inference"}
PROTOCOLS = ["agent", "inference"]


async def collect(gen: Any) -> list[Any]:
    return [item async for item in gen]


def text(items: list[Any]) -> str:
    return "".join(i for i in items if isinstance(i, str))


@pytest.fixture
def emu(emulator: EmulatorThread, cache: AuthCache) -> EmulatorThread:
    """The emulator with a cleared Cloudflare record (clearance, UA, client hints) in the cache."""
    cache.put(make_record("cloudflare", emulator.url))
    return emulator


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_both_protocols_answer_alike(emu: EmulatorThread, protocol: Any, stream: bool) -> None:
    """Either protocol yields the reply text, then FinishReason and Usage, streamed or collected."""
    items = await collect(
        Cloudflare.create_async_generator("", MESSAGES, stream=stream, base_url=emu.url, protocol=protocol)
    )
    assert text(items) == REPLY
    assert FinishReason("stop") in items
    usage = next(i for i in items if isinstance(i, Usage))
    assert usage.completion_tokens == 9
    if not stream:
        assert items[0] == REPLY
    assert emu.stats["api_requests"] == {ROUTE[protocol]: 1}


async def test_agent_socket_carries_the_record_identity(emu: EmulatorThread, cache: AuthCache) -> None:
    """The upgrade sends the record's UA, client hints and cookies, the site's Origin, and the opening frames."""
    items = await collect(Cloudflare.create_async_generator("llama-3.1-8b", MESSAGES, base_url=emu.url))
    assert text(items) == REPLY
    headers = emu.stats["last_headers"]
    assert headers["user-agent"] == USER_AGENT
    for name, value in CLIENT_HINTS.items():
        assert headers[name] == value
    assert headers["origin"] == emu.url
    record = cache.get("cloudflare")
    assert record is not None and f"cf_clearance={record.cookie_dict()['cf_clearance']}" in headers["cookie"]
    assert emu.stats["agent_frames"] == [
        "cf_agent_stream_resume_request",
        "cf_agent_identity",
        "cf_agent_state",
        "cf_agent_mcp_servers",
        "cf_agent_stream_resume_none",
        "cf_agent_use_chat_request",
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_repeated_identical_deltas_are_kept(emu: EmulatorThread, protocol: Any) -> None:
    """Five identical chunks in a row give five identical deltas (g4f's agent client drops the repeats)."""
    emu.configure(stream_chunks=5, chunk_text="ha")
    items = await collect(Cloudflare.create_async_generator("", MESSAGES, base_url=emu.url, protocol=protocol))
    assert [i for i in items if isinstance(i, str)] == ["ha"] * 5


async def test_env_picks_the_protocol(emu: EmulatorThread, monkeypatch: pytest.MonkeyPatch) -> None:
    """HARVEST_CLOUDFLARE_PROTOCOL=inference selects `/api/inference`; an explicit argument still wins."""
    monkeypatch.setenv("HARVEST_CLOUDFLARE_PROTOCOL", "inference")
    assert text(await collect(Cloudflare.create_async_generator("", MESSAGES, base_url=emu.url))) == REPLY
    assert emu.stats["api_requests"] == {"/api/inference": 1}
    await collect(Cloudflare.create_async_generator("", MESSAGES, base_url=emu.url, protocol="agent"))
    assert emu.stats["api_requests"]["/agents/playground"] == 1


def test_protocol_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    """Default `agent`; the environment, then the argument, override it; anything else is a ValueError."""
    monkeypatch.delenv("HARVEST_CLOUDFLARE_PROTOCOL", raising=False)
    assert resolve_protocol(None) == "agent"
    monkeypatch.setenv("HARVEST_CLOUDFLARE_PROTOCOL", " Inference ")
    assert resolve_protocol(None) == "inference"
    assert resolve_protocol("agent") == "agent"
    with pytest.raises(ValueError, match="agent, inference"):
        resolve_protocol("grpc")


async def test_unknown_frames_and_fragments_change_nothing(emu: EmulatorThread) -> None:
    """Unknown frame and part types are ignored, and fragmented messages are joined: the reply is intact."""
    emu.configure(unknown_frames=True, fragment_frames=True)
    items = await collect(Cloudflare.create_async_generator("", MESSAGES, base_url=emu.url))
    assert text(items) == REPLY
    assert FinishReason("stop") in items


async def test_close_mid_stream_is_truncation_and_not_retried(emu: EmulatorThread) -> None:
    """A socket closed before `finish` raises StreamError after the text that arrived; no second socket."""
    emu.configure(cut_stream=True)
    seen: list[Any] = []
    with pytest.raises(StreamError):
        async for item in Cloudflare.create_async_generator("", MESSAGES, base_url=emu.url):
            seen.append(item)
    assert seen and all(isinstance(i, str) for i in seen)
    assert emu.stats["agent_sockets_opened"] == 1


async def test_slow_first_frame_times_out(emu: EmulatorThread) -> None:
    """A first frame later than the call's timeout raises ProviderTimeout, and the socket is closed."""
    emu.configure(first_frame_ms=3000)
    with pytest.raises(ProviderTimeout):
        await collect(Cloudflare.create_async_generator("", MESSAGES, base_url=emu.url, timeout=0.5))
    await wait_for_sockets_closed(emu)


async def test_5xx_at_the_upgrade_is_retried(emu: EmulatorThread) -> None:
    """Two 503 answers to the upgrade are retried; the third socket carries the reply."""
    emu.configure(fail_next=2, fail_status=503)
    assert text(await collect(Cloudflare.create_async_generator("", MESSAGES, base_url=emu.url))) == REPLY
    assert emu.stats["api_requests"]["/agents/playground"] == 3


async def test_unknown_model_on_the_server_is_a_stream_error(emu: EmulatorThread) -> None:
    """The agent's error frame (a model the server lacks) raises StreamError with its message."""
    with pytest.raises(StreamError, match="model not found"):
        await collect(Cloudflare.create_async_generator("gpt-oss-20b", MESSAGES, base_url=emu.url))


async def test_early_aclose_closes_the_socket(emu: EmulatorThread) -> None:
    """Leaving the stream early (aclose) closes the socket at once, long before the reply would end."""
    emu.configure(stream_chunks=400, drip_ms=25)
    gen = Cloudflare.create_async_generator("", MESSAGES, base_url=emu.url)
    async for _ in gen:
        break
    assert emu.stats["agent_sockets_open"] == 1
    await gen.aclose()  # type: ignore[attr-defined]
    await wait_for_sockets_closed(emu)


@pytest.mark.slow
async def test_challenge_at_the_upgrade_heals_with_one_browser_run(emulator: EmulatorThread, cache: AuthCache) -> None:
    """No record: the upgrade meets the challenge, one harvest heals it; after a revoke, one more heals it again."""
    emulator.configure(think_ms=50)
    assert text(await collect(Cloudflare.create_async_generator("", MESSAGES, base_url=emulator.url))) == REPLY
    assert emulator.stats["clearances_issued"] == 1
    emulator.revoke()
    assert text(await collect(Cloudflare.create_async_generator("", MESSAGES, base_url=emulator.url))) == REPLY
    assert emulator.stats["clearances_issued"] == 2
    record = cache.get("cloudflare")
    assert record is not None and emulator.stats["last_user_agent"] == record.user_agent


@pytest.mark.slow
async def test_blocked_upgrade_heals_then_names_the_command(emulator: EmulatorThread, cache: AuthCache) -> None:
    """A 403 block page at the upgrade goes through the heal path; the failed harvest names the command to run."""
    cache.put(make_record("cloudflare", emulator.url))
    emulator.configure(variant="blocked", think_ms=50)
    with pytest.raises(MissingAuthError, match="harvest --provider cloudflare"):
        await collect(Cloudflare.create_async_generator("", MESSAGES, base_url=emulator.url))


async def wait_for_sockets_closed(emu: EmulatorThread) -> None:
    for _ in range(300):
        if emu.stats["agent_sockets_open"] == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the server still has an open agent socket")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_client_of_its_own_speaks_both(emu: EmulatorThread, cache: AuthCache, protocol: Any) -> None:
    """`Client("cloudflare").chat(protocol=...)` streams over either protocol, and `aclose` closes its sockets."""
    async with Client("cloudflare", cache=cache, base_url=emu.url) as client:
        assert text(await collect(client.chat(MESSAGES, protocol=protocol))) == REPLY
        assert text(await collect(client.chat(MESSAGES, "llama-3.3-70b", protocol=protocol))) == REPLY
    assert emu.stats["api_requests"] == {ROUTE[protocol]: 2}
    with pytest.raises(RuntimeError):
        client.websockets()


async def test_protocol_is_only_for_cloudflare(emu: EmulatorThread) -> None:
    """Asking another provider for a protocol is a ValueError, before any request."""
    with pytest.raises(ValueError, match="one protocol"):
        await collect(FreeNetfly.create_async_generator("gpt-4", MESSAGES, base_url=emu.url, protocol="agent"))
    assert emu.stats["api_requests_total"] == 0
