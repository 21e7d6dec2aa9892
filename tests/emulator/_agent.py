"""The Cloudflare playground's WebSocket agent (``/agents/playground/{agent_id}``), as the real page talks to it.

Written from the protocol facts, independently of ``providers`` (the emulator must not agree with the client by
sharing its code). The route sits behind the same gate as every API route (challenge, ``fail_next``...), which
answers the upgrade request with a plain HTTP status instead of ``101``.

Server frames are written by ``FrameWriter`` straight to the transport, pre-built and batched like the HTTP
streams; it can also split a frame into a text frame plus continuation frames (``fragment_frames``), which
aiohttp's own writer cannot (it always sets FIN).
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from . import _catalog as catalog
from . import _streams as streams
from ._state import EmulatorConfig, State

# One transport write per this many frames, as for the HTTP streams.
_BATCH = 64
# Above this many unsent bytes the writer waits for the client to read (it polls: the emulator has no public
# drain for a raw write, and the poll only runs while a client is slower than the stream).
_HIGH_WATER = 256 * 1024
_MAX_MESSAGE = 1024 * 1024
# A socket on which the client sends nothing for this long is closed: every server wait has an end.
_IDLE_TIMEOUT = 60.0

_OPCODE_TEXT = 0x1
_OPCODE_CONTINUATION = 0x0
_OPCODE_CLOSE = 0x8


def ws_frame(payload: bytes, opcode: int = _OPCODE_TEXT, *, fin: bool = True) -> bytes:
    """One unmasked server frame (RFC 6455 section 5.2)."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        return struct.pack("!BB", first, size) + payload
    if size < 65536:
        return struct.pack("!BBH", first, 126, size) + payload
    return struct.pack("!BBQ", first, 127, size) + payload


def fragmented(payload: bytes) -> bytes:
    """The same text message as a text frame without FIN and two continuation frames (cut mid-character too)."""
    third = max(1, len(payload) // 3)
    head, middle, tail = payload[:third], payload[third : 2 * third], payload[2 * third :]
    return (
        ws_frame(head, _OPCODE_TEXT, fin=False)
        + ws_frame(middle, _OPCODE_CONTINUATION, fin=False)
        + ws_frame(tail, _OPCODE_CONTINUATION, fin=True)
    )


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with a status code."""
    return ws_frame(struct.pack("!H", code) + reason.encode(), _OPCODE_CLOSE)


def response_frame(
    request_id: str, part: dict[str, Any] | None, *, done: bool = False, error: str | None = None
) -> bytes:
    """A ``cf_agent_use_chat_response`` message: one UI-message-stream part as a JSON string in ``body``."""
    body = error if error is not None else ("" if part is None else orjson.dumps(part).decode())
    message: dict[str, Any] = {"type": "cf_agent_use_chat_response", "id": request_id, "body": body, "done": done}
    if error is not None:
        message["error"] = True
    return orjson.dumps(message)


#: What an unknown-frames emulator sprinkles into a reply: frame types and part types no client knows.
UNKNOWN_FRAMES = (
    orjson.dumps({"type": "cf_agent_emulator_unknown", "note": "a frame type from the future"}),
    orjson.dumps({"type": "cf_agent_state", "state": {"model": "echo"}}),
)


def unknown_part_frame(request_id: str) -> bytes:
    """A reply frame whose part type is unknown (a custom ``data-*`` part)."""
    return response_frame(request_id, {"type": "data-emulator", "data": {"unknown": True}})


def reply_messages(request_id: str, tokens: list[str], prompt: int, cfg: EmulatorConfig) -> tuple[list[bytes], bool]:
    """The reply's messages, faults spliced in; and whether to close the socket after them (``cut_stream``)."""
    cache: dict[str, bytes] = {}
    deltas: list[bytes] = []
    for token in tokens:
        message = cache.get(token)
        if message is None:
            message = cache[token] = response_frame(request_id, {"type": "text-delta", "id": "t0", "delta": token})
        deltas.append(message)
    usage = {"inputTokens": prompt, "outputTokens": len(tokens), "totalTokens": prompt + len(tokens)}
    head = [
        response_frame(request_id, {"type": "start"}),
        response_frame(request_id, {"type": "start-step"}),
        response_frame(request_id, {"type": "text-start", "id": "t0"}),
    ]
    tail = [
        response_frame(request_id, {"type": "text-end", "id": "t0"}),
        response_frame(request_id, {"type": "finish-step"}),
        response_frame(request_id, {"type": "finish", "finishReason": "stop", "messageMetadata": {"usage": usage}}),
        response_frame(request_id, None, done=True),
    ]
    middle = max(1, len(deltas) // 2)
    if cfg.cut_stream:
        return head + deltas[:middle], True
    if cfg.unknown_frames:
        deltas[middle:middle] = [*UNKNOWN_FRAMES, unknown_part_frame(request_id)]
    if cfg.error_event:
        deltas[middle:middle] = [response_frame(request_id, {"type": "error", "errorText": "upstream overloaded"})]
    if cfg.malformed_event:
        deltas[middle:middle] = [response_frame(request_id, None)[:-8]]
    return head + deltas + tail, False


class FrameWriter:
    """Writes server frames to the socket's transport, batched, with the ``fragment_frames`` knob."""

    def __init__(self, request: web.Request, cfg: EmulatorConfig) -> None:
        assert request.transport is not None
        self._transport = request.transport
        self._fragment = cfg.fragment_frames

    def encode(self, message: bytes) -> bytes:
        return fragmented(message) if self._fragment else ws_frame(message)

    async def write(self, messages: list[bytes], drip_ms: float = 0.0) -> bool:
        """Write text messages; False when the client went away."""
        encode, transport = self.encode, self._transport
        if drip_ms > 0:
            for message in messages:
                if transport.is_closing():
                    return False
                transport.write(encode(message))
                await asyncio.sleep(drip_ms / 1000)
            return True
        for start in range(0, len(messages), _BATCH):
            if transport.is_closing():
                return False
            transport.write(b"".join(map(encode, messages[start : start + _BATCH])))
            while transport.get_write_buffer_size() > _HIGH_WATER:
                if transport.is_closing():
                    return False
                await asyncio.sleep(0.001)
        return not transport.is_closing()

    def abort(self, code: int = 1011) -> None:
        """Close mid-stream: a close frame, then the TCP connection, without waiting for the client's close."""
        if not self._transport.is_closing():
            self._transport.write(close_frame(code, "emulated upstream failure"))
            self._transport.close()


async def serve_agent(request: web.Request, state: State) -> web.StreamResponse:
    """One agent socket: greet, read the opening frames, answer each chat request with a streamed reply."""
    agent_id = request.match_info["agent_id"]
    names = [m["name"] for m in catalog.CLOUDFLARE_MODELS]
    model = request.query.get("model") or names[0]
    ws = web.WebSocketResponse(compress=False, max_msg_size=_MAX_MESSAGE, receive_timeout=_IDLE_TIMEOUT)
    await ws.prepare(request)
    state.agent_socket(opened=True)
    writer = FrameWriter(request, state.config)
    received: list[str] = []
    try:
        # What the Agents SDK sends every new connection: who it is, and its state. Clients ignore both.
        hello = [
            orjson.dumps({"type": "cf_agent_identity", "name": agent_id, "agent": "playground"}),
            orjson.dumps({"type": "cf_agent_state", "state": {"model": model}}),
        ]
        if not await writer.write(hello):
            return ws
        while True:
            try:
                msg = await ws.receive()
            except TimeoutError:
                break
            if msg.type != WSMsgType.TEXT:
                break  # close, error, or binary (not part of this protocol)
            try:
                frame = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                await ws.close(code=1003, message=b"not JSON")
                break
            kind = str(frame.get("type")) if isinstance(frame, dict) else "?"
            received.append(kind)
            if kind == "cf_agent_state" and isinstance(frame.get("state"), dict):
                model = str(frame["state"].get("model") or model)
            elif kind == "cf_agent_use_chat_request":
                state.record_agent_frames(received)
                if not await _reply(request, state, writer, frame, model, names):
                    break
    finally:
        state.agent_socket(opened=False)
    return ws


async def _reply(
    request: web.Request, state: State, writer: FrameWriter, frame: dict[str, Any], model: str, names: list[str]
) -> bool:
    """Stream one reply; False when the socket is gone (cut on purpose, or the client left)."""
    cfg = state.config
    request_id = str(frame.get("id", ""))
    if model not in names:
        return await writer.write([response_frame(request_id, None, done=True, error=f"model not found: {model}")])
    messages = _ui_messages(frame)
    openai_style = [
        {"role": m.get("role"), "content": "".join(str(p.get("text", "")) for p in m.get("parts") or [])}
        for m in messages
        if isinstance(m, dict)
    ]
    tokens = streams.reply_tokens("cloudflare", openai_style, cfg)
    out, cut = reply_messages(request_id, tokens, streams.prompt_tokens(openai_style), cfg)
    if cfg.first_frame_ms > 0:
        await asyncio.sleep(cfg.first_frame_ms / 1000)
    if cut:
        await writer.write(out, cfg.drip_ms)
        writer.abort()
        return False
    return await writer.write(out, cfg.drip_ms)


def _ui_messages(frame: dict[str, Any]) -> list[Any]:
    """The UI messages inside a chat request's JSON-string body (nothing when it is not that shape)."""
    init = frame.get("init")
    body = init.get("body") if isinstance(init, dict) else None
    try:
        data = orjson.loads(body) if isinstance(body, str) else None
    except orjson.JSONDecodeError:
        return []
    messages = data.get("messages") if isinstance(data, dict) else None
    return messages if isinstance(messages, list) else []
