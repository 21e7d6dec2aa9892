"""The agent protocol codec: the opening sequence, the chat request, and server frames decoded into chunks."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers import FinishReason, Reasoning, StreamError, Usage
from providers._agent_protocol import (
    AgentDecoder,
    chat_request,
    new_agent_id,
    new_request_id,
    opening_frames,
    socket_url,
    split_messages,
)

REQ = "req_abc12345"


def frame(body: dict[str, Any] | str | None, *, request_id: str = REQ, **extra: Any) -> bytes:
    """A server frame carrying one UI-message-stream part (or a raw body string)."""
    message: dict[str, Any] = {"type": "cf_agent_use_chat_response", "id": request_id, "done": False, **extra}
    if body is not None:
        message["body"] = body if isinstance(body, str) else orjson.dumps(body).decode()
    return orjson.dumps(message)


def delta(text: str) -> bytes:
    return frame({"type": "text-delta", "id": "t0", "delta": text})


FINISH = frame({"type": "finish"})


def test_agent_id_and_request_id_shapes() -> None:
    """Agent ids are `playground-` plus base-36, request ids `req_` plus base-36, fresh each time."""
    assert re.fullmatch(r"playground-[0-9a-z]{11}", new_agent_id())
    assert re.fullmatch(r"req_[0-9a-z]{8}", new_request_id())
    assert new_agent_id() != new_agent_id()


def test_socket_url_maps_scheme_and_encodes_the_model() -> None:
    """https becomes wss, http becomes ws, and the model is URL-encoded in the query with the _pk."""
    url = socket_url("https://playground.ai.cloudflare.com", "playground-abc", "@cf/meta/llama 3", "pk-1")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "wss",
        "playground.ai.cloudflare.com",
        "/agents/playground/playground-abc",
    )
    assert "model=%40cf%2Fmeta%2Fllama%203" in parts.query
    assert parse_qs(parts.query) == {"_pk": ["pk-1"], "model": ["@cf/meta/llama 3"]}
    assert socket_url("http://127.0.0.1:8080/", "a", "m", "p").startswith("ws://127.0.0.1:8080/agents/playground/a?")


def test_opening_frames_in_order_with_state() -> None:
    """The five opening frames come in the page's order; the state carries model, temperature and system."""
    frames = [
        orjson.loads(f) for f in opening_frames("playground-x", model="@cf/m", temperature=0.2, system="Be brief.")
    ]
    assert [f["type"] for f in frames] == [
        "cf_agent_stream_resume_request",
        "cf_agent_identity",
        "cf_agent_state",
        "cf_agent_mcp_servers",
        "cf_agent_stream_resume_none",
    ]
    assert frames[1] == {"name": "playground-x", "agent": "playground", "type": "cf_agent_identity"}
    assert frames[2]["state"] == {
        "model": "@cf/m",
        "temperature": 0.2,
        "stream": True,
        "system": "Be brief.",
        "useExternalProvider": False,
        "externalProvider": "openai",
        "generativeUI": False,
    }
    assert frames[3]["mcp"] == {"prompts": [], "resources": [], "servers": {}, "tools": []}
    defaults = orjson.loads(opening_frames("a", model="m", temperature=None, system=None)[2])["state"]
    assert (defaults["temperature"], defaults["system"]) == (1.0, "You are a helpful assistant.")


def test_chat_request_body_is_a_json_string_of_ui_messages() -> None:
    """System messages go to the state; the rest become UI messages with text parts inside a JSON-string body."""
    system, ui = split_messages(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "hel"}, {"type": "text", "text": "lo"}]},
            {"role": "user", "content": "again"},
        ]
    )
    assert system == "Be brief."
    request = orjson.loads(chat_request("req_1", ui))
    assert request["type"] == "cf_agent_use_chat_request"
    assert request["id"] == "req_1"
    assert request["init"]["method"] == "POST"
    body = orjson.loads(request["init"]["body"])
    assert body["trigger"] == "submit-message"
    assert body["messages"] == [
        {"role": "user", "parts": [{"type": "text", "text": "hi"}], "id": "msg_0"},
        {"role": "assistant", "parts": [{"type": "text", "text": "hello"}], "id": "msg_1"},
        {"role": "user", "parts": [{"type": "text", "text": "again"}], "id": "msg_2"},
    ]
    assert split_messages([{"role": "user", "content": "x"}])[0] is None


def test_deltas_then_finish_with_usage() -> None:
    """Text deltas come out as str, reasoning as Reasoning, and `finish` as FinishReason plus Usage."""
    decoder = AgentDecoder(REQ)
    items: list[Any] = []
    for data in (
        frame({"type": "start"}),
        frame({"type": "reasoning-delta", "id": "r", "delta": "hmm"}),
        frame({"type": "text-start", "id": "t0"}),
        delta("Hel"),
        delta("lo"),
        frame({"type": "text-end", "id": "t0"}),
        frame({"type": "finish-step"}),
    ):
        items += decoder.feed(data)
    assert not decoder.finished, "finish-step is not the end of the reply"
    usage = {"inputTokens": 3, "outputTokens": 2, "totalTokens": 5}
    items += decoder.feed(frame({"type": "finish", "finishReason": "length", "messageMetadata": {"usage": usage}}))
    assert decoder.finished
    assert items == [Reasoning("hmm"), "Hel", "lo", FinishReason("length"), Usage(3, 2, 5)]
    assert decoder.close() == []
    assert decoder.feed(delta("late")) == [], "nothing after the end"


def test_repeated_identical_deltas_are_kept() -> None:
    """Two equal deltas in a row are two pieces of text (the bug g4f has drops the second)."""
    decoder = AgentDecoder(REQ)
    items = [item for data in (delta("ha"), delta("ha"), delta("ha"), FINISH) for item in decoder.feed(data)]
    assert "".join(i for i in items if isinstance(i, str)) == "hahaha"


def test_unknown_frames_and_parts_and_other_requests_are_ignored() -> None:
    """State echoes, unknown frame types, unknown part types and frames of another request yield nothing."""
    decoder = AgentDecoder(REQ)
    ignored = [
        orjson.dumps({"type": "cf_agent_state", "state": {"model": "m"}}),
        orjson.dumps({"type": "cf_agent_identity", "name": "x", "agent": "playground"}),
        orjson.dumps({"type": "cf_agent_something_new", "x": 1}),
        orjson.dumps([1, 2]),
        frame({"type": "data-weather", "data": {}}),
        frame({"type": "text-delta", "delta": "not ours"}, request_id="req_other"),
        frame({"type": "text-delta", "delta": ""}),
        frame(None),
    ]
    for data in ignored:
        assert decoder.feed(data) == []
    assert not decoder.finished


def test_done_without_finish_ends_the_reply() -> None:
    """`done: true` ends the reply even without a finish part; a later finish adds nothing."""
    decoder = AgentDecoder(REQ)
    assert decoder.feed(delta("a")) == ["a"]
    assert decoder.feed(frame("", done=True)) == [FinishReason("stop")]
    assert decoder.finished
    assert decoder.feed(FINISH) == []


def test_done_after_finish_adds_nothing() -> None:
    """The usual end, `finish` then `done: true`, gives one FinishReason."""
    decoder = AgentDecoder(REQ)
    assert decoder.feed(FINISH) == [FinishReason("stop")]
    assert decoder.feed(frame("", done=True)) == []


def test_close_before_finish_is_truncation() -> None:
    """A socket that ends before `finish` or `done` raises StreamError (truncated)."""
    decoder = AgentDecoder(REQ)
    decoder.feed(delta("a"))
    decoder.feed(frame({"type": "finish-step"}))
    with pytest.raises(StreamError, match="truncated"):
        decoder.close()


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (frame("upstream overloaded", done=True, error=True), "upstream overloaded"),
        (frame({"type": "error", "errorText": "model exploded"}), "model exploded"),
        (b'{"type": "cf_agent_use_chat_response", "id": ', "malformed agent frame"),
        (frame('{"type": "text-delta", "delta": '), "malformed agent body"),
        (frame("[1]"), "malformed agent body"),
    ],
)
def test_errors_and_malformed_frames_raise_stream_error(data: bytes, match: str) -> None:
    """Error frames, error parts and malformed JSON (frame or body) raise StreamError with the reason."""
    with pytest.raises(StreamError, match=match):
        AgentDecoder(REQ).feed(data)


def test_str_frames_decode_like_bytes() -> None:
    """A frame given as str decodes the same as bytes."""
    assert AgentDecoder(REQ).feed(delta("é").decode()) == ["é"]


@given(st.lists(st.text(min_size=1, max_size=8), max_size=30))
def test_any_deltas_round_trip(deltas: list[str]) -> None:
    """Any sequence of deltas (repeats, unicode, JSON metacharacters) comes back exactly, in order."""
    decoder = AgentDecoder(REQ)
    items = [item for data in [*map(delta, deltas), FINISH] for item in decoder.feed(data)]
    assert items == [*deltas, FinishReason("stop")]
