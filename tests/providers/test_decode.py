"""The OpenAI stream decoder: any split of the bytes gives the same items, and broken streams raise typed errors."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers._base import Decoder
from providers._decode import DataStreamItemDecoder, OpenAIStreamDecoder
from providers._exceptions import StreamError
from providers._types import Chunk, FinishReason, Reasoning, Usage


def chunk_event(delta: dict[str, object], finish: str | None = None, eol: str = "\n") -> bytes:
    payload = {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(payload) + (eol * 2).encode()


def decode(body: bytes, cuts: list[int] = (), decoder: Decoder | None = None) -> list[Chunk]:  # type: ignore[assignment]
    """Feed ``body`` to a decoder (the OpenAI one unless given) split at ``cuts``, and collect every item."""
    decoder = decoder or OpenAIStreamDecoder("test")
    items: list[Chunk] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(body)]:
        items += decoder.feed(body[start:cut])
        start = cut
    return items + decoder.close()


_texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=6)


@st.composite
def openai_streams(draw: st.DrawFn) -> tuple[bytes, list[Chunk]]:
    """A stream of text and reasoning deltas (maybe with an ``event:`` or ``id:`` field, any line end), a finish
    reason, usage and ``[DONE]``; with the items it must decode to."""
    parts: list[bytes] = []
    expected: list[Chunk] = []
    eol = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    for text, reasoning, extra in draw(st.lists(st.tuples(_texts, st.booleans(), st.booleans()), max_size=8)):
        event = chunk_event({"reasoning_content": text} if reasoning else {"content": text}, eol=eol)
        if extra:
            event = f"id: {len(parts)}{eol}: a comment{eol}".encode() + event
        parts.append(event)
        expected.append(Reasoning(text) if reasoning else text)
    parts.append(chunk_event({}, "stop", eol=eol))
    usage = {"prompt_tokens": 3, "completion_tokens": len(expected), "total_tokens": 3 + len(expected)}
    parts.append(b"data: " + orjson.dumps({"choices": [], "usage": usage}) + (eol * 2).encode())
    parts.append(f"data: [DONE]{eol}{eol}".encode())
    expected += [FinishReason("stop"), Usage(3, len(expected), 3 + len(expected))]
    return b"".join(parts), expected


@given(stream=openai_streams(), data=st.data())
@settings(max_examples=300, deadline=None)
def test_any_split_decodes_to_the_same_items(stream: tuple[bytes, list[Chunk]], data: st.DataObject) -> None:
    """Whole or cut anywhere (inside UTF-8 characters and CRLF pairs too), a stream decodes to the same items."""
    body, expected = stream
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=10))
    assert decode(body) == expected
    assert decode(body, cuts) == expected


def test_nothing_after_done_counts() -> None:
    """Events after ``[DONE]``, in the same chunk or a later one, are ignored."""
    body = chunk_event({"content": "a"}) + b"data: [DONE]\n\n" + chunk_event({"content": "b"})
    decoder = OpenAIStreamDecoder("test")
    assert decoder.feed(body) == ["a"]
    assert decoder.feed(b"data: {not json}\n\n") == []
    assert decoder.close() == []
    # The same with an irregular block (an ``event:`` line) after the end marker: an error there is past the end.
    late_error = OpenAIStreamDecoder("test")
    assert late_error.feed(chunk_event({"content": "a"}) + b"data: [DONE]\n\nevent: error\ndata: {}\n\n") == ["a"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"data: {not json}\n\n", "malformed stream event"),
        (b"data: [1, 2]\n\n", "reported an error"),
        (b'data: {"error": {"message": "overloaded"}}\n\n', "overloaded"),
        (b'event: error\ndata: {"message": "quota"}\n\n', "quota"),
        (b"event: error\ndata: plain words\n\n", "plain words"),
    ],
)
def test_errors_in_the_stream_are_typed(body: bytes, message: str) -> None:
    """A malformed event, an error object and an ``event: error`` all raise ``StreamError`` with the reason."""
    with pytest.raises(StreamError, match=message):
        OpenAIStreamDecoder("test").feed(chunk_event({"content": "a"}) + body)


def test_a_cut_stream_is_truncated() -> None:
    """A stream that ends before ``[DONE]`` and before any finish reason raises at ``close``."""
    decoder = OpenAIStreamDecoder("test")
    assert decoder.feed(chunk_event({"content": "a"})) == ["a"]
    with pytest.raises(StreamError, match="truncated"):
        decoder.close()


@given(
    texts=st.lists(st.tuples(_texts, st.booleans()), max_size=8),
    eol=st.sampled_from(["\n", "\r\n"]),
    data=st.data(),
)
@settings(max_examples=200, deadline=None)
def test_data_stream_any_split_decodes_to_the_same_items(
    texts: list[tuple[str, bool]], eol: str, data: st.DataObject
) -> None:
    """Cloudflare's data stream: text (``0:``) and reasoning (``g:``) parts, the step finish with usage, the
    message finish; whole or cut anywhere, the same items."""
    lines = [(b"g:" if reasoning else b"0:") + orjson.dumps(text) for text, reasoning in texts]
    usage = {"promptTokens": 2, "completionTokens": len(texts)}
    lines.append(b"e:" + orjson.dumps({"finishReason": "stop", "usage": usage}))
    lines.append(b"d:" + orjson.dumps({"finishReason": "stop", "usage": usage}))
    body = b"".join(line + eol.encode() for line in lines)
    expected: list[Chunk] = [Reasoning(text) if reasoning else text for text, reasoning in texts]
    expected += [FinishReason("stop"), Usage(2, len(texts), 2 + len(texts))]
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=10))
    assert decode(body, decoder=DataStreamItemDecoder("test")) == expected
    assert decode(body, cuts, DataStreamItemDecoder("test")) == expected


@pytest.mark.parametrize("line", [b'0:"unterminated\n', b"no colon here\n", b'3:"the model is overloaded"\n'])
def test_data_stream_errors_are_typed(line: bytes) -> None:
    """A malformed part and an error part (``3:``) raise StreamError."""
    with pytest.raises(StreamError):
        DataStreamItemDecoder("test").feed(b'0:"ok"\n' + line)
