"""The Cloudflare playground's WebSocket protocol (Cloudflare Agents SDK vocabulary): pure encode and decode.

No I/O here; ``_websocket`` moves the frames. The facts, as the playground's own page speaks them:

- The socket: ``wss://<site>/agents/playground/<agent id>?_pk=<uuid4>&model=<model, URL-encoded>``, where the agent
  id is ``playground-`` plus a random base-36 string. The upgrade carries the page's cookies (the challenge must have
  been cleared), user agent and ``Origin``.
- On open the client sends, in order: ``cf_agent_stream_resume_request``, ``cf_agent_identity``, ``cf_agent_state``
  (model, temperature, system prompt...), ``cf_agent_mcp_servers`` (none), ``cf_agent_stream_resume_none``; then
  the chat as ``cf_agent_use_chat_request`` whose ``init.body`` is a JSON *string* of AI SDK UI messages
  (``{"role", "parts": [{"type": "text", "text"}], "id"}``) with ``"trigger": "submit-message"``.
- The server answers with ``cf_agent_use_chat_response`` frames whose ``body`` is a JSON string holding one AI SDK
  UI-message-stream part (``start``, ``text-delta`` with ``delta``, ``finish-step``, ``finish``...), and ends with
  ``done: true`` (``error: true`` too when it failed, the body then being the message). Other frame types (state
  echoes, identity, message lists) are not for us and are ignored, as are part types we do not know.

The reply ends at the ``finish`` part or at ``done: true``, not at ``finish-step``: a reply with tool calls has one
step per call, and ``finish`` follows the last ``finish-step`` at once anyway. Repeated identical deltas are
text ("ha", "ha") and are all kept.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import orjson

from ._exceptions import StreamError, short_body
from ._types import Chunk, FinishReason, Messages, Reasoning, Usage

AGENT = "playground"
DEFAULT_SYSTEM = "You are a helpful assistant."
DEFAULT_TEMPERATURE = 1.0
_BASE36 = string.digits + string.ascii_lowercase
_SYSTEM_ROLES = frozenset({"system", "developer"})

_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


def new_agent_id() -> str:
    """A fresh agent instance name: ``playground-`` and 11 random base-36 characters, as the page makes them."""
    return f"{AGENT}-" + "".join(secrets.choice(_BASE36) for _ in range(11))


def new_request_id() -> str:
    """A fresh chat request id (``req_`` and 8 base-36 characters)."""
    return "req_" + "".join(secrets.choice(_BASE36) for _ in range(8))


def socket_url(origin: str, agent_id: str, model: str, pk: str) -> str:
    """The agent's socket URL on ``origin`` (``https`` becomes ``wss``, ``http`` becomes ``ws``)."""
    parts = urlsplit(origin)
    scheme = {"https": "wss", "http": "ws"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/") + f"/agents/{AGENT}/{agent_id}"
    return urlunsplit((scheme, parts.netloc, path, f"_pk={pk}&model={quote(model, safe='')}", ""))


def message_text(content: Any) -> str:
    """The text of an OpenAI-style ``content``: a string, or the ``text`` of its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", "")) for part in content if isinstance(part, Mapping) and part.get("type") == "text"
        )
    return "" if content is None else str(content)


def split_messages(messages: Messages) -> tuple[str | None, list[dict[str, Any]]]:
    """Split chat messages into the system prompt (the page keeps it in the agent's state) and UI messages."""
    system: list[str] = []
    ui: list[dict[str, Any]] = []
    for message in messages:
        role = str(message.get("role", "user"))
        text = message_text(message.get("content"))
        if role in _SYSTEM_ROLES:
            system.append(text)
            continue
        ui.append({"role": role, "parts": [{"type": "text", "text": text}], "id": f"msg_{len(ui)}"})
    return ("\n\n".join(system) if system else None), ui


def opening_frames(agent_id: str, *, model: str, temperature: float | None, system: str | None) -> list[bytes]:
    """The five frames the page sends when the socket opens, in order."""
    state = {
        "model": model,
        "temperature": DEFAULT_TEMPERATURE if temperature is None else temperature,
        "stream": True,
        "system": DEFAULT_SYSTEM if system is None else system,
        "useExternalProvider": False,
        "externalProvider": "openai",
        "generativeUI": False,
    }
    mcp: dict[str, Any] = {"prompts": [], "resources": [], "servers": {}, "tools": []}
    return [
        orjson.dumps({"type": "cf_agent_stream_resume_request"}),
        orjson.dumps({"name": agent_id, "agent": AGENT, "type": "cf_agent_identity"}),
        orjson.dumps({"state": state, "type": "cf_agent_state"}),
        orjson.dumps({"mcp": mcp, "type": "cf_agent_mcp_servers"}),
        orjson.dumps({"type": "cf_agent_stream_resume_none"}),
    ]


def chat_request(request_id: str, ui_messages: list[dict[str, Any]]) -> bytes:
    """The ``cf_agent_use_chat_request`` frame; its body is a JSON string inside the JSON frame."""
    body = orjson.dumps({"messages": ui_messages, "trigger": "submit-message"}).decode()
    return orjson.dumps(
        {"id": request_id, "init": {"method": "POST", "body": body}, "type": "cf_agent_use_chat_request"}
    )


class AgentDecoder:
    """Server frames of one chat request -> ``str`` deltas, ``Reasoning``, then ``FinishReason`` (and ``Usage``).

    ``feed`` takes one whole WebSocket message (bytes or str); ``finished`` turns true at the reply's end, and
    ``close`` raises ``StreamError`` if the socket ended before that (a truncated reply).
    """

    __slots__ = ("_request_id", "finished", "provider")

    def __init__(self, request_id: str, provider: str = "cloudflare") -> None:
        self._request_id = request_id
        self.provider = provider
        self.finished = False

    def feed(self, frame: bytes | str) -> list[Chunk]:
        """Decode one server frame; frames of other types or other requests give nothing."""
        try:
            message = _loads(frame)
        except _JSONDecodeError as exc:
            raise self._malformed("frame", frame) from exc
        if (
            type(message) is not dict
            or message.get("type") != "cf_agent_use_chat_response"
            or message.get("id") != self._request_id
            or self.finished
        ):
            return []
        body = message.get("body")
        if message.get("error"):
            self.finished = True
            raise StreamError(
                f"{self.provider}: the agent reported an error: {short_body(str(body or 'no message'))}",
                provider=self.provider,
            )
        items = self._part(body) if body else []
        if message.get("done") and not self.finished:
            # The server ended the reply without a finish part: it is complete all the same.
            self.finished = True
            items.append(FinishReason("stop"))
        return items

    def close(self) -> list[Chunk]:
        """The socket ended: nothing more to give, and a reply without its end is truncated."""
        if not self.finished:
            raise StreamError(
                f"{self.provider}: the socket closed before the reply finished (truncated)", provider=self.provider
            )
        return []

    def _part(self, body: Any) -> list[Chunk]:
        try:
            part = _loads(body) if isinstance(body, str | bytes) else body
        except _JSONDecodeError as exc:
            raise self._malformed("body", body) from exc
        if type(part) is not dict:
            raise self._malformed("body", body)
        kind = part.get("type")
        if kind == "text-delta":
            # The hot case. An empty delta is nothing; a repeated one is text and is kept.
            delta = part.get("delta")
            return [delta if type(delta) is str else str(delta)] if delta else []
        if kind == "reasoning-delta":
            delta = part.get("delta")
            return [Reasoning(str(delta))] if delta else []
        if kind == "finish":
            self.finished = True
            items: list[Chunk] = [FinishReason(str(part.get("finishReason") or "stop"))]
            usage = _usage(part.get("messageMetadata"))
            if usage is not None:
                items.append(usage)
            return items
        if kind == "error":
            self.finished = True
            text = part.get("errorText") or part.get("error") or "no message"
            raise StreamError(
                f"{self.provider}: the agent reported an error: {short_body(str(text))}", provider=self.provider
            )
        return []  # start, start-step, text-start/-end, finish-step, data-* and anything newer

    def _malformed(self, what: str, data: Any) -> StreamError:
        return StreamError(
            f"{self.provider}: malformed agent {what}: {short_body(str(data), 80)}", provider=self.provider
        )


def _usage(metadata: Any) -> Usage | None:
    """Token counts from a ``finish`` part's metadata, in the AI SDK's names (or OpenAI's), when the server sent any."""
    usage = metadata.get("usage") if isinstance(metadata, Mapping) else None
    if not isinstance(usage, Mapping):
        return None
    if "prompt_tokens" in usage or "completion_tokens" in usage:
        return Usage.from_openai(usage)
    prompt = int(usage.get("inputTokens") or 0)
    completion = int(usage.get("outputTokens") or 0)
    return Usage(prompt, completion, int(usage.get("totalTokens") or prompt + completion))
