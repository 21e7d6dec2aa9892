"""Incremental parsers for streamed responses: pure functions of bytes, no I/O.

``SSEDecoder`` follows the WHATWG event-stream rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation):
CR, LF and CRLF line ends, comment lines, ``field:value`` with or without the space, multi-line ``data``,
``event``, ``id`` and ``retry``; an event with no ``data`` line is never dispatched, and an event cut off by
the end of the stream is discarded.

It works on bytes, not on decoded lines. Line terminators are ASCII and never occur inside a UTF-8 sequence,
so a chunk may be split anywhere (inside a character too) and event data stays bytes that orjson reads
directly. A regular stream (``data: {...}\\n\\n`` with LF ends) never builds a Python string per line: it is
one ``split(b"\\n\\n")`` per network chunk and one slice per event.

``DataStreamDecoder`` parses the Vercel AI SDK data stream (``0:"text"\\n``, ``e:{...}\\n``) that Cloudflare's
playground speaks.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from ._exceptions import StreamError

_BOM = b"\xef\xbb\xbf"


class ServerSentEvent(NamedTuple):
    """One dispatched event. ``data`` is the raw UTF-8 payload (multi-line data joined with LF)."""

    data: bytes
    event: str = "message"
    id: str = ""
    retry: int | None = None

    @property
    def text(self) -> str:
        """The data decoded as UTF-8 (invalid bytes replaced, as a browser does)."""
        return self.data.decode("utf-8", "replace")

    def json(self) -> Any:
        """The data parsed as JSON."""
        return orjson.loads(self.data)


class SSEDecoder:
    """Turn the bytes of an event stream into ``ServerSentEvent`` values, one chunk at a time.

    ``feed(chunk)`` returns the events completed by ``chunk``; ``close()`` returns what the end of the
    stream completes (only a held-back CR can do that) and discards an unfinished event.
    """

    __slots__ = ("_bom_checked", "_buffer", "last_event_id", "retry")

    def __init__(self) -> None:
        self._buffer = b""
        self._bom_checked = False
        #: The spec's "last event ID buffer": it outlives events until another ``id`` field changes it.
        self.last_event_id = ""
        #: The last valid ``retry`` value (the reconnection time in milliseconds).
        self.retry: int | None = None

    @property
    def pending(self) -> bool:
        """True if bytes of an unfinished event are buffered (blank lines alone do not count)."""
        return bool(self._buffer.strip(b"\r\n"))

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Consume ``chunk`` and return the events it completes, in order."""
        blocks, _ = self.split(chunk)
        return self.events(blocks) if blocks else []

    def feed_data(self, chunk: bytes) -> list[bytes] | list[ServerSentEvent]:
        """Like ``feed``, but when every completed event is a single ``data: `` line (the regular case), return
        just their payloads: no object per event. Otherwise return the events, as ``feed`` does."""
        blocks, single_lines = self.split(chunk)
        payloads = plain_payloads(blocks, single_lines)
        if payloads is not None:
            return payloads
        return self.events(blocks)

    def split(self, chunk: bytes) -> tuple[list[bytes], bool]:
        """Consume ``chunk``; return the blocks it completes (line ends normalised to LF, blank-line separators
        removed) and whether each of them is a single line."""
        buffer = self._buffer + chunk if self._buffer else chunk
        if not self._bom_checked:
            # The BOM may itself be split across chunks; wait until it can be told apart.
            if len(buffer) < len(_BOM) and _BOM.startswith(buffer):
                self._buffer = buffer
                return [], True
            if buffer.startswith(_BOM):
                buffer = buffer[len(_BOM) :]
            self._bom_checked = True
        held = b""
        if b"\r" in buffer:
            # A CR at the very end may be the first half of a CRLF split across chunks: hold it back.
            if buffer.endswith(b"\r"):
                buffer, held = buffer[:-1], b"\r"
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n\n" not in buffer:
            self._buffer = buffer + held
            return [], True
        blocks = buffer.split(b"\n\n")
        rest = blocks.pop()
        self._buffer = rest + held
        # buffer == b"\n\n".join(blocks + [rest]), so the blocks hold no LF exactly when the separators
        # account for every LF outside the rest: two C-level counts instead of a scan per block.
        single_lines = buffer.count(b"\n") == 2 * len(blocks) + rest.count(b"\n")
        return blocks, single_lines

    def events(self, blocks: list[bytes]) -> list[ServerSentEvent]:
        """The events of blocks that ``split`` returned."""
        events: list[ServerSentEvent] = []
        for block in blocks:
            if block[:6] == b"data: " and b"\n" not in block:
                # The common case: one ``data: `` line, no other field.
                events.append(ServerSentEvent(block[6:], "message", self.last_event_id))
            elif block:
                self._parse_block(block, events)
        return events

    def close(self) -> list[ServerSentEvent]:
        """Signal the end of the stream; return any event completed by a held-back CR."""
        buffer, self._buffer = self._buffer, b""
        if buffer.endswith(b"\r"):
            # At the end of the stream a trailing CR cannot start a CRLF any more: it ends its line.
            self._buffer = buffer[:-1]
            events = self.feed(b"\n")
            self._buffer = b""
            return events
        return []

    def _parse_block(self, block: bytes, events: list[ServerSentEvent]) -> None:
        """Parse the lines of one blank-line-terminated block and dispatch it if it had data."""
        data: list[bytes] = []
        event = ""
        retry: int | None = None
        for line in block.split(b"\n"):
            if not line or line[0] == 0x3A:  # a leading blank line dispatches nothing; ":" is a comment
                continue
            name, colon, value = line.partition(b":")
            if colon and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                data.append(value)
            elif name == b"event":
                event = value.decode("utf-8", "replace")
            elif name == b"id":
                if b"\x00" not in value:
                    self.last_event_id = value.decode("utf-8", "replace")
            elif name == b"retry":
                if value.isdigit():  # bytes.isdigit is ASCII-only, as the spec requires
                    retry = self.retry = int(value)
        if data:
            events.append(ServerSentEvent(b"\n".join(data), event or "message", self.last_event_id, retry))


def plain_payloads(blocks: list[bytes], single_lines: bool) -> list[bytes] | None:
    """The data of blocks from ``SSEDecoder.split`` when each is a single ``data: `` line (the regular case),
    else None."""
    if not single_lines:
        return None
    payloads = [block[6:] for block in blocks if block[:6] == b"data: "]
    return payloads if len(payloads) == len(blocks) else None


def parse_sse(body: bytes) -> list[ServerSentEvent]:
    """Parse a whole event-stream body at once."""
    decoder = SSEDecoder()
    return decoder.feed(body) + decoder.close()


class DataStreamDecoder:
    """Parse the Vercel AI SDK data stream: one ``<type>:<json>`` part per LF-terminated line.

    ``feed(chunk)`` returns ``(type, value)`` pairs with the JSON already decoded; a line that is not a
    part raises ``StreamError``.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    @property
    def pending(self) -> bool:
        """True if an unterminated line is buffered."""
        return bool(self._buffer.strip())

    def feed(self, chunk: bytes) -> list[tuple[str, Any]]:
        """Consume ``chunk`` and return the parts of the lines it completes."""
        return [data_stream_part(line) for line in self.lines(chunk)]

    def lines(self, chunk: bytes) -> list[bytes]:
        """Consume ``chunk`` and return the non-empty lines it completes, without their line ends."""
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\n" not in buffer:
            self._buffer = buffer
            return []
        lines = buffer.split(b"\n")
        self._buffer = lines.pop()
        if b"\r" in buffer:
            lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
        if b"" in lines:
            lines = [line for line in lines if line]
        return lines

    def close(self) -> list[tuple[str, Any]]:
        """Signal the end of the stream; a last line without its LF still counts."""
        buffer, self._buffer = self._buffer.strip(), b""
        return [data_stream_part(buffer)] if buffer else []


def data_stream_part(line: bytes) -> tuple[str, Any]:
    """Split one data-stream line into its type code and decoded JSON value."""
    code, colon, payload = line.partition(b":")
    if not colon or not code or len(code) > 2:
        raise StreamError(f"malformed data-stream line: {line[:80]!r}")
    try:
        return code.decode("ascii"), orjson.loads(payload)
    except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StreamError(f"malformed data-stream line: {line[:80]!r}") from exc
