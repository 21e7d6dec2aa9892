"""Response bodies: OpenAI SSE, the Vercel AI data stream and plain completions, with faults spliced in.

Pure functions that return bytes, pre-built so a route only has to write them: benchmarks stream 20,000 chunks,
so one event costs a dict lookup and a few byte concatenations, not a JSON dump.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson

from ._state import EmulatorConfig

_WORD = re.compile(r"\S+\s*")
REASONING_CHUNKS = ("Let me think about this. ", "A friendly greeting fits. ")

MALFORMED_SSE = b'data: {"choices": [{"delta": {"content": \n\n'
ERROR_SSE = b'event: error\ndata: {"error":{"message":"upstream overloaded"}}\n\n'
DONE_SSE = b"data: [DONE]\n\n"
# Vercel AI data stream: part type 3 is an error part; a "0:" text part with half a JSON string is malformed.
MALFORMED_DATA = b'0:"unterminated\n'
ERROR_DATA = b'3:"upstream overloaded"\n'


@dataclass(frozen=True)
class StreamPlan:
    """What a route writes: whole events, then (when cutting) a partial event before aborting the socket."""

    events: list[bytes]
    cut_tail: bytes | None = None


def message_text(content: Any) -> str:
    """The text of a chat message `content`, which may be a string or a list of OpenAI content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def last_user_message(messages: Any) -> str:
    """The content of the last `user` message, or "" when there is none."""
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return message_text(message.get("content"))
    return ""


def prompt_tokens(messages: Any) -> int:
    """A word count over every message, good enough for a `usage` block."""
    if not isinstance(messages, list):
        return 0
    return sum(len(_WORD.findall(message_text(m.get("content")))) for m in messages if isinstance(m, dict))


def reply_tokens(provider: str, messages: Any, cfg: EmulatorConfig) -> list[str]:
    """The deterministic reply split into chunks: words with their trailing spaces, or `stream_chunks` fixed ones."""
    if cfg.stream_chunks is not None:
        return [cfg.chunk_text] * cfg.stream_chunks
    text = f"Hello from the {provider} emulator. You said: {last_user_message(messages)}"
    return _WORD.findall(text)


def is_reasoning(model: str) -> bool:
    """Models named like DeepSeek R1 or "...reasoning..." think out loud first."""
    lowered = model.lower()
    return "r1" in lowered or "reasoning" in lowered


def _splice(events: list[bytes], cfg: EmulatorConfig, malformed: bytes, error: bytes) -> StreamPlan:
    """Insert the configured faults in the middle of `events` (at least one good event comes first)."""
    middle = max(1, len(events) // 2)
    if cfg.cut_stream:
        head, nxt = events[:middle], events[middle] if middle < len(events) else events[-1]
        return StreamPlan(head, nxt[: max(1, len(nxt) // 2)])
    extra = ([malformed] if cfg.malformed_event else []) + ([error] if cfg.error_event else [])
    return StreamPlan(events[:middle] + extra + events[middle:])


def openai_stream(model: str, tokens: list[str], prompt: int, cfg: EmulatorConfig) -> StreamPlan:
    """`chat.completion.chunk` SSE events, a final chunk with usage, and `data: [DONE]`."""
    completion_id = "chatcmpl-" + secrets.token_hex(12)
    created = int(time.time())
    head = (
        b'data: {"id":"'
        + completion_id.encode()
        + b'","object":"chat.completion.chunk","created":'
        + str(created).encode()
        + b',"model":'
        + orjson.dumps(model)
        + b',"choices":[{"index":0,"delta":'
    )
    cache: dict[str, bytes] = {}

    def chunk(delta_json: bytes, tail: bytes = b',"finish_reason":null}]}\n\n') -> bytes:
        return head + delta_json + tail

    events: list[bytes] = []
    if is_reasoning(model):
        for thought in REASONING_CHUNKS:
            events.append(chunk(b'{"role":"assistant","reasoning_content":' + orjson.dumps(thought) + b"}"))
    for token in tokens:
        event = cache.get(token)
        if event is None:
            event = cache[token] = chunk(b'{"role":"assistant","content":' + orjson.dumps(token) + b"}")
        events.append(event)
    usage = {"prompt_tokens": prompt, "completion_tokens": len(tokens), "total_tokens": prompt + len(tokens)}
    events.append(chunk(b"{}", b',"finish_reason":"stop"}],"usage":' + orjson.dumps(usage) + b"}\n\n"))
    events.append(DONE_SSE)
    return _splice(events, cfg, MALFORMED_SSE, ERROR_SSE)


def openai_completion(model: str, tokens: list[str], prompt: int) -> dict[str, Any]:
    """A non-streamed `chat.completion` object."""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(tokens)}
    if is_reasoning(model):
        message["reasoning_content"] = "".join(REASONING_CHUNKS)
    return {
        "id": "chatcmpl-" + secrets.token_hex(12),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": len(tokens), "total_tokens": prompt + len(tokens)},
    }


def data_stream(tokens: list[str], prompt: int, cfg: EmulatorConfig) -> StreamPlan:
    """The Vercel AI data stream of the Cloudflare playground: `0:` text parts, then `e:` and `d:` finish parts."""
    cache: dict[str, bytes] = {}
    events: list[bytes] = []
    for token in tokens:
        event = cache.get(token)
        if event is None:
            event = cache[token] = b"0:" + orjson.dumps(token) + b"\n"
        events.append(event)
    usage = {"promptTokens": prompt, "completionTokens": len(tokens)}
    events.append(b"e:" + orjson.dumps({"finishReason": "stop", "usage": usage, "isContinued": False}) + b"\n")
    events.append(b"d:" + orjson.dumps({"finishReason": "stop", "usage": usage}) + b"\n")
    return _splice(events, cfg, MALFORMED_DATA, ERROR_DATA)
