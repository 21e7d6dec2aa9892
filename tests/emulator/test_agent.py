"""The emulator's WebSocket agent route, spoken to with a plain aiohttp WebSocket client."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest

from tests.emulator import EmulatorThread
from tests.emulator._agent import fragmented, ws_frame

from .test_emulator import clear

OPENING = [
    {"type": "cf_agent_stream_resume_request"},
    {"name": "playground-test", "agent": "playground", "type": "cf_agent_identity"},
    {"state": {"model": "@cf/meta/llama-3.1-8b-instruct-awq", "stream": True}, "type": "cf_agent_state"},
    {"mcp": {"prompts": [], "resources": [], "servers": {}, "tools": []}, "type": "cf_agent_mcp_servers"},
    {"type": "cf_agent_stream_resume_none"},
]


def chat_frame(text: str = "hi there", request_id: str = "req_1") -> dict[str, Any]:
    """A `cf_agent_use_chat_request` with one user message."""
    messages = [{"role": "user", "parts": [{"type": "text", "text": text}], "id": "msg_0"}]
    body = orjson.dumps({"messages": messages, "trigger": "submit-message"}).decode()
    return {"id": request_id, "init": {"method": "POST", "body": body}, "type": "cf_agent_use_chat_request"}


def socket_path(model: str = "@cf/meta/llama-3.3-70b-instruct-fp8-fast") -> str:
    return f"/agents/playground/playground-test?_pk=pk&model={model.replace('/', '%2F').replace('@', '%40')}"


async def converse(client: aiohttp.ClientSession, url: str, **ws: Any) -> tuple[list[dict[str, Any]], bool]:
    """Open the socket, send the opening frames and one chat; return every frame up to the end, and whether the
    reply finished (a `done` frame) rather than the socket closing first."""
    frames: list[dict[str, Any]] = []
    async with client.ws_connect(url.replace("http", "ws") + socket_path(), **ws) as sock:
        for frame in [*OPENING, chat_frame()]:
            await sock.send_str(orjson.dumps(frame).decode())
        async for msg in sock:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            frame = orjson.loads(msg.data)
            frames.append(frame)
            if frame.get("done"):
                return frames, True
    return frames, False


def parts(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The UI-message-stream parts inside the reply frames."""
    return [orjson.loads(f["body"]) for f in frames if f.get("type") == "cf_agent_use_chat_response" and f.get("body")]


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(p["delta"] for p in parts(frames) if p["type"] == "text-delta")


async def test_upgrade_without_clearance_is_the_challenge(
    emulator: EmulatorThread, client: aiohttp.ClientSession
) -> None:
    """The upgrade request gets the 403 challenge (with `cf-mitigated`) until the challenge is cleared."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect(emulator.url.replace("http", "ws") + socket_path())
    assert info.value.status == 403
    assert info.value.headers is not None and info.value.headers.get("cf-mitigated") == "challenge"
    assert emulator.stats["agent_sockets_opened"] == 0


async def test_reply_streams_in_agent_vocabulary(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """A cleared socket answers a chat with start, text deltas, finish (with usage) and a `done` frame."""
    await clear(client, emulator.url)
    frames, finished = await converse(client, emulator.url, origin=emulator.url)
    assert finished
    assert frames[0] == {"type": "cf_agent_identity", "name": "playground-test", "agent": "playground"}
    assert text_of(frames) == "Hello from the cloudflare emulator. You said: hi there"
    kinds = [p["type"] for p in parts(frames)]
    assert kinds[:3] == ["start", "start-step", "text-start"]
    assert kinds[-3:] == ["text-end", "finish-step", "finish"]
    assert parts(frames)[-1]["messageMetadata"]["usage"]["outputTokens"] == kinds.count("text-delta")
    stats = emulator.stats
    assert stats["agent_frames"] == [f["type"] for f in [*OPENING, chat_frame()]]
    assert stats["api_requests"] == {"/agents/playground": 1}
    assert stats["last_headers"]["origin"] == emulator.url


async def test_unknown_model_is_an_error_frame(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """A model the playground lacks (from the state frame) ends the reply with an `error: true` frame."""
    await clear(client, emulator.url)
    async with client.ws_connect(emulator.url.replace("http", "ws") + socket_path("@cf/nope")) as sock:
        await sock.send_str(orjson.dumps(chat_frame()).decode())
        frames = [orjson.loads((await sock.receive()).data) for _ in range(3)]
    assert frames[-1]["error"] is True and frames[-1]["done"] is True
    assert "model not found" in frames[-1]["body"]


async def test_fail_next_refuses_the_upgrade(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """API faults apply at the upgrade: `fail_next` answers it with the configured status."""
    await clear(client, emulator.url)
    emulator.configure(fail_next=1, fail_status=503)
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect(emulator.url.replace("http", "ws") + socket_path())
    assert info.value.status == 503


async def test_cut_stream_closes_before_finish(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """`cut_stream` closes the socket after about half the deltas, without `finish` or `done`."""
    await clear(client, emulator.url)
    emulator.configure(cut_stream=True)
    frames, finished = await converse(client, emulator.url)
    assert not finished
    kinds = [p["type"] for p in parts(frames)]
    assert "text-delta" in kinds and "finish" not in kinds


async def test_unknown_frames_are_spliced_in(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """`unknown_frames` adds frames and parts of unknown types mid-reply; the text is unchanged."""
    await clear(client, emulator.url)
    emulator.configure(unknown_frames=True)
    frames, finished = await converse(client, emulator.url)
    assert finished
    assert any(f["type"] == "cf_agent_emulator_unknown" for f in frames)
    assert any(p["type"] == "data-emulator" for p in parts(frames))
    assert text_of(frames) == "Hello from the cloudflare emulator. You said: hi there"


async def test_fragmented_frames_reassemble(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """`fragment_frames` sends each message as continuation frames; a conforming client reassembles them."""
    await clear(client, emulator.url)
    emulator.configure(fragment_frames=True, chunk_text="é€ ", stream_chunks=5)
    frames, finished = await converse(client, emulator.url)
    assert finished
    assert text_of(frames) == "é€ " * 5


def test_fragmented_is_three_frames_of_one_message() -> None:
    """The fragment writer emits text (no FIN), continuation (no FIN), continuation (FIN), cutting mid-character."""
    payload = "é€".encode()
    data = fragmented(payload)
    assert data[0] == 0x01 and data[2 : 2 + data[1]] == payload[:1]
    assert data == ws_frame(payload[:1], 0x1, fin=False) + ws_frame(payload[1:2], 0x0, fin=False) + ws_frame(
        payload[2:], 0x0
    )
    assert ws_frame(b"x" * 70000)[:2] == bytes([0x81, 127])


async def test_slow_first_frame(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """`first_frame_ms` holds the reply back that long after the chat request."""
    await clear(client, emulator.url)
    emulator.configure(first_frame_ms=300)
    async with client.ws_connect(emulator.url.replace("http", "ws") + socket_path()) as sock:
        await sock.receive()  # the identity greeting comes at once
        await sock.receive()
        started = time.monotonic()
        await sock.send_str(orjson.dumps(chat_frame()).decode())
        await sock.receive()
        assert time.monotonic() - started >= 0.3


async def test_socket_close_is_counted(emulator: EmulatorThread, client: aiohttp.ClientSession) -> None:
    """Open sockets are counted while open, and the count drops when the client closes."""
    await clear(client, emulator.url)
    async with client.ws_connect(emulator.url.replace("http", "ws") + socket_path()) as sock:
        await sock.receive()
        assert emulator.stats["agent_sockets_open"] == 1
    for _ in range(100):
        if emulator.stats["agent_sockets_open"] == 0:
            break
        await asyncio.sleep(0.01)
    assert emulator.stats["agent_sockets_open"] == 0
    assert emulator.stats["agent_sockets_opened"] == 1
