"""The event-stream and data-stream parsers: spec rules, and any split of the bytes gives the same events."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from providers._exceptions import StreamError
from providers._sse import DataStreamDecoder, ServerSentEvent, SSEDecoder, parse_sse


def reference_parse(body: bytes) -> list[ServerSentEvent]:
    """A slow, literal reading of the WHATWG algorithm over decoded lines, to check the fast parser."""
    text = body.decode("utf-8", "surrogateescape")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines: list[str] = []
    current = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\r":
            lines.append("".join(current))
            current = []
            if i + 1 < len(text) and text[i + 1] == "\n":
                i += 1
        elif ch == "\n":
            lines.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    events = []
    data = ""
    event_type = ""
    last_id = ""
    retry = None
    for line in lines:  # the unterminated remainder in `current` is discarded with its event
        if line == "":
            if data:
                events.append(
                    ServerSentEvent(
                        data[:-1].encode("utf-8", "surrogateescape"), event_type or "message", last_id, retry
                    )
                )
            data, event_type, retry = "", "", None
            continue
        if line.startswith(":"):
            continue
        if ":" in line:
            name, value = line.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:
            name, value = line, ""
        if name == "data":
            data += value + "\n"
        elif name == "event":
            event_type = value
        elif name == "id":
            if "\0" not in value:
                last_id = value
        elif name == "retry" and value and all("0" <= c <= "9" for c in value):
            retry = int(value)
    return events


def feed_in_pieces(body: bytes, cuts: list[int]) -> list[ServerSentEvent]:
    """Feed ``body`` to one decoder split at ``cuts`` and collect every event."""
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    start = 0
    for cut in sorted(set(cuts)):
        events += decoder.feed(body[start:cut])
        start = cut
    events += decoder.feed(body[start:])
    return events + decoder.close()


_field_value = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=12)
_line = st.one_of(
    st.builds(lambda v: f"data: {v}", _field_value),
    st.builds(lambda v: f"data:{v}", _field_value),
    st.just("data"),
    st.builds(lambda v: f"event: {v}", _field_value),
    st.builds(lambda v: f"id: {v}", _field_value),
    st.builds(lambda v: f"retry: {v}", st.one_of(st.integers(0, 10_000).map(str), _field_value)),
    st.builds(lambda v: f":{v}", _field_value),
    st.builds(lambda v: f"{v}", _field_value),
    st.just(""),
)
_eol = st.sampled_from(["\n", "\r", "\r\n"])


@st.composite
def event_streams(draw: st.DrawFn) -> bytes:
    """A random event stream: random fields, line ends, blank lines, maybe a BOM and a cut-off tail."""
    parts = []
    for _ in range(draw(st.integers(0, 12))):
        parts.append(draw(_line) + draw(_eol))
    body = "".join(parts)
    if draw(st.booleans()):
        body = "\ufeff" + body
    return body.encode()


@given(body=event_streams(), data=st.data())
@settings(max_examples=400, deadline=None)
def test_any_split_gives_the_same_events(body: bytes, data: st.DataObject) -> None:
    """Any split of a stream's bytes, inside UTF-8 characters and CRLF pairs too, gives the whole body's events."""
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=8))
    whole = parse_sse(body)
    assert whole == reference_parse(body)
    assert feed_in_pieces(body, cuts) == whole
    assert feed_in_pieces(body, list(range(len(body)))) == whole


def feed_data_in_pieces(body: bytes, cuts: list[int]) -> list[bytes]:
    """The payloads ``feed_data`` gives for ``body`` split at ``cuts`` (events turned into their data)."""
    decoder = SSEDecoder()
    payloads: list[bytes] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(body)]:
        for item in decoder.feed_data(body[start:cut]):
            payloads.append(item if isinstance(item, bytes) else item.data)
        start = cut
    return payloads + [event.data for event in decoder.close()]


@given(body=event_streams(), data=st.data())
@settings(max_examples=300, deadline=None)
@example(body=b"data: \n\ndata: \nevent: 0\n\r", data=None)  # a last CR is held back: it may start a CRLF
def test_feed_data_fast_path_agrees_with_the_events(body: bytes, data: st.DataObject | None) -> None:
    """``feed_data`` returns bare payloads only where that loses nothing: the same data as the events, in order,
    and bare payloads only for events that are plain ``message`` events."""
    cuts = data.draw(st.lists(st.integers(0, len(body)), max_size=8)) if data is not None else []
    assert feed_data_in_pieces(body, cuts) == [event.data for event in parse_sse(body)]
    decoder = SSEDecoder()
    result = decoder.feed_data(body)
    if result and isinstance(result[0], bytes):
        # Only the events this chunk completed: an unfinished last one is judged when it completes.
        assert all(event.event == "message" for event in parse_sse(body)[: len(result)])


def test_feed_data_takes_the_fast_path_for_a_regular_stream() -> None:
    """A regular stream yields bare payloads; one with an ``event:`` line yields events."""
    assert SSEDecoder().feed_data(b"data: 1\n\ndata: {}\n\ndata: [") == [b"1", b"{}"]
    events = SSEDecoder().feed_data(b"data: 1\n\nevent: error\ndata: {}\n\n")
    assert events == [ServerSentEvent(b"1"), ServerSentEvent(b"{}", "error")]


def test_regular_openai_stream() -> None:
    """The regular ``data: {json}`` stream parses to one event per block, ``[DONE]`` included."""
    body = b'data: {"a":1}\n\ndata: {"a":2}\n\ndata: [DONE]\n\n'
    events = parse_sse(body)
    assert [e.data for e in events] == [b'{"a":1}', b'{"a":2}', b"[DONE]"]
    assert events[0].json() == {"a": 1}
    assert all(e.event == "message" for e in events)


def test_multiline_data_and_fields() -> None:
    """Multi-line data is joined with LF; event, id and retry are reported, and the id persists."""
    body = b"event: update\nid: 7\nretry: 1500\ndata: one\ndata:two\n\ndata: three\n\n"
    first, second = parse_sse(body)
    assert first == ServerSentEvent(b"one\ntwo", "update", "7", 1500)
    assert second == ServerSentEvent(b"three", "message", "7", None)


def test_event_without_data_is_not_dispatched() -> None:
    """A block with only ``event``/``id``/comments dispatches nothing, but the id still sticks."""
    events = parse_sse(b"event: ping\nid: 3\n: keep-alive\n\ndata: x\n\n")
    assert events == [ServerSentEvent(b"x", "message", "3")]


def test_cr_crlf_and_bom() -> None:
    """CR and CRLF end lines like LF, and a leading BOM is dropped."""
    assert parse_sse(b"\xef\xbb\xbfdata: a\r\rdata: b\r\n\r\n") == [
        ServerSentEvent(b"a"),
        ServerSentEvent(b"b"),
    ]


def test_unfinished_event_is_discarded() -> None:
    """An event cut off by the end of the stream is not dispatched, and ``pending`` says so."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: complete\n\ndata: cut") == [ServerSentEvent(b"complete")]
    assert decoder.pending
    assert decoder.close() == []


def test_data_stream_parts() -> None:
    """Vercel data-stream lines split anywhere give typed parts with decoded JSON."""
    body = b'0:"Hel"\n0:"lo \\u00e9"\ne:{"finishReason":"stop","usage":{"promptTokens":3}}\n'
    decoder = DataStreamDecoder()
    parts = []
    for i in range(len(body)):
        parts += decoder.feed(body[i : i + 1])
    parts += decoder.close()
    assert parts == [
        ("0", "Hel"),
        ("0", "lo é"),
        ("e", {"finishReason": "stop", "usage": {"promptTokens": 3}}),
    ]


def test_data_stream_malformed_line() -> None:
    """A data-stream line that is not ``code:json`` raises StreamError."""
    with pytest.raises(StreamError):
        DataStreamDecoder().feed(b"0:{not json\n")
    with pytest.raises(StreamError):
        DataStreamDecoder().feed(b"<html>\n")
