"""The fast lane: a streamed chat completion answered on the connection itself, below aiohttp's request machinery.

For a small streamed completion, aiohttp's per-request work (a request object, a payload reader, a task, the
router, the middleware chain, the response's end and the keep-alive bookkeeping) was about 120,000 of the
server's 845,000 instructions, a seventh of it, and the gateway's own layers over it another 58,000: most of
what the gateway cost over calling the provider in-process. The lane takes only requests it understands
completely and answers them with the gateway's own code; everything else goes to aiohttp, unchanged:

- the connection is idle (aiohttp waits for its next request, none is queued or half read), and one read holds
  exactly one whole request: ``POST /v1/chat/completions HTTP/1.1`` with a ``Content-Length`` body, plain header
  lines, no ``Transfer-Encoding``, ``Expect``, ``Upgrade``, ``Content-Encoding`` or ``Connection`` other than
  ``keep-alive``;
- the token is right, the body is a JSON object asking for a stream, the gateway accepts it (model, messages,
  numbers) and the request cap has room.

Anything else (a wrong token, a bad body, a full server, a request in two reads, two requests in one read) is
handed to aiohttp with the same bytes, and gets exactly today's answer. A connection whose bytes aiohttp might
hold half a request of never takes the lane again.

The lane keeps what the middleware keeps: the request cap, the metrics (same route and outcome), the provider
timeout, backpressure, errors before the first byte as OpenAI error objects with their status, errors after it
as an SSE error event and ``[DONE]``, draining at shutdown and the keep-alive timeout (see ``_limits``, which
holds the connection's side: the only uses of aiohttp internals are there).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from email.utils import formatdate
from typing import TYPE_CHECKING, Protocol

import orjson
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from ._app import bearer_ok, error_response
from ._events import EventStream
from ._limits import Full
from ._openai import GatewayError, _is_provider_error, first_batch, translate

if TYPE_CHECKING:
    from ._app import ServeState
    from ._openai import ChatCall, Gateway

logger = logging.getLogger("harvest.serve")

ROUTE = "/v1/chat/completions"
_REQUEST_START = b"POST /v1/chat/completions HTTP/1.1\r\n"
#: Longer heads go to aiohttp, which enforces its own line and field limits.
_MAX_HEAD = 8000
#: Header fields that change how a request is framed or answered: such a request goes to aiohttp.
_FRAMING = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"content-encoding"})
#: The header fields ``frame`` reads (a field folded onto the line before is not one, for aiohttp either).
_FRAMING_FIELDS = re.compile(
    rb"\r\n(content-length|transfer-encoding|expect|upgrade|content-encoding):[ \t]*([^\r\n]*?)[ \t]*(?=\r\n|$)",
    re.IGNORECASE,
)
#: Bytes no header line may hold (controls other than tab, and DEL): aiohttp would refuse the request.
_CONTROL = bytes(range(0x20)).replace(b"\t", b"") + b"\x7f"
_SERVER = b"Server: " + SERVER_SOFTWARE.encode() + b"\r\n"


class Connection(Protocol):
    """The connection's side of the lane (``_limits._HeaderDeadlineHandler``)."""

    transport: asyncio.Transport | None

    async def drain(self) -> None: ...

    def lane_begin(self) -> None: ...

    def lane_end(self) -> None: ...


def frame(data: bytes) -> tuple[bytes, bytes] | None:
    """(head, body) when ``data`` is exactly one whole HTTP request with a ``Content-Length`` body (or none),
    else None (half a request, more than one, or a framing this check does not read)."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep or len(head) > _MAX_HEAD:
        return None
    length = -1
    for name, value in _FRAMING_FIELDS.findall(head):
        if name.lower() != b"content-length" or length >= 0 or not value.isdigit():
            return None
        length = int(value)
    if length != len(body) and not (length < 0 and not body):
        return None
    return head, body


class FastLane:
    """Takes whole streamed-completion requests off idle connections (``take``) and answers them."""

    #: How every request the lane may take begins (the connection checks it before anything else).
    start = _REQUEST_START
    frame = staticmethod(frame)

    def __init__(self, state: ServeState, gateway: Gateway) -> None:
        self.state = state
        self.gateway = gateway
        self._token = state.settings.token.encode() if state.settings.token else None
        self._open = state.settings.loopback or state.settings.no_auth
        self.taken = 0  # requests the lane answered (tests and curious operators read it)

    def take(self, connection: Connection, data: bytes) -> bool:
        """Answer ``data`` on ``connection`` if the lane can (True); else change nothing (False)."""
        if data[:36] != _REQUEST_START:
            return False
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep or len(head) > _MAX_HEAD or _bad(head):
            return False
        length = -1
        authorization: bytes | None = None
        # One pass over the header lines (the request line was matched above): what frames the request, the
        # token, the connection's fate; any field of another shape is aiohttp's to judge.
        for line in head[36:].split(b"\r\n"):
            name, colon, value = line.partition(b":")
            name = name.lower()
            if name == b"content-length":
                value = value.strip()
                if length >= 0 or not value.isdigit():
                    return False
                length = int(value)
            elif name == b"authorization":
                if authorization is not None:
                    return False
                authorization = value.strip()
            elif name == b"connection":
                if value.strip().lower() != b"keep-alive":
                    return False
            elif not colon or name in _FRAMING or not name.replace(b"-", b"").isalnum():
                return False
        if length != len(body):
            return False
        token = self._token
        if token is None:
            if not self._open:
                return False
        elif authorization is None or not bearer_ok(authorization.decode("latin-1"), token):
            return False
        state = self.state
        if len(body) > state.limits.max_body:
            return False
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(document, dict) or not document.get("stream"):
            return False
        try:
            call = self.gateway.parse_chat(document)
        except Exception:  # the gateway's own errors (and anything odd) are aiohttp's to answer
            return False
        gate = state.requests
        if gate.in_flight >= gate.cap:
            return False
        gate.enter()
        transport = connection.transport
        assert transport is not None
        connection.lane_begin()
        self.taken += 1
        task = asyncio.get_running_loop().create_task(self._answer(connection, transport, call))
        _running.add(task)
        task.add_done_callback(_running.discard)
        return True

    async def _answer(self, connection: Connection, transport: asyncio.Transport, call: ChatCall) -> None:
        started = time.perf_counter()
        status = 500
        try:
            gateway = self.gateway
            try:
                batches = gateway.open_chat(call)
                iterator, batch = await first_batch(batches)
            except GatewayError as exc:
                status = exc.status
                _send(transport, exc.response(ROUTE))
                return
            except Full as exc:
                status = 503
                headers = {"Retry-After": str(exc.retry_after)}
                _send(transport, error_response(ROUTE, 503, str(exc), code="overloaded", headers=headers))
                return
            except Exception as exc:
                if not _is_provider_error(exc):
                    raise
                error = translate(exc)
                status = error.status
                _send(transport, error.response(ROUTE))
                return
            status = 200
            events = EventStream.on_connection(transport, connection)
            await gateway.pump(events, batches, iterator, batch, call.answer_model)
        except ConnectionError:
            status = 499  # the client went away before its error answer: nobody to tell
        except asyncio.CancelledError:
            status = 499  # the server is stopping
            raise
        except Exception:
            logger.exception("serve.internal_error route=%s", ROUTE)
            status = 500
            message = "internal error in harvest serve (please report this)"
            try:
                _send(transport, error_response(ROUTE, 500, message))
            except ConnectionError:
                pass
        finally:
            self.state.requests.leave()
            self.state.metrics.observe(ROUTE, str(status), time.perf_counter() - started)
            connection.lane_end()


def _bad(head: bytes) -> bool:
    """True when a line of the head holds a control byte other than tab (a bare CR or LF included)."""
    lines = head.replace(b"\r\n", b"")
    return len(lines.translate(None, _CONTROL)) != len(lines)


def _send(transport: asyncio.Transport, response: web.Response) -> None:
    """Write a whole (small, JSON) response, as aiohttp would, keeping the connection."""
    if transport.is_closing():
        raise ConnectionResetError("the client closed the connection")
    body = response.body
    assert isinstance(body, bytes)
    head = [f"HTTP/1.1 {response.status} {response.reason}\r\n".encode()]
    for name, value in response.headers.items():
        if name.lower() != "content-length":
            head.append(f"{name}: {value}\r\n".encode("latin-1"))
    head.append(b"Content-Length: %d\r\n" % len(body))
    head.append(b"Date: " + formatdate(usegmt=True).encode() + b"\r\n" + _SERVER + b"\r\n")
    transport.write(b"".join(head) + body)


# Strong references to the lane's tasks: the loop keeps only weak ones.
_running: set[asyncio.Task[None]] = set()
