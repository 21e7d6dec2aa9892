"""Cloudflare's AI playground, behind a Cloudflare challenge, in either of its two protocols.

- ``agent`` (the default, what the playground's page speaks today): a WebSocket to the playground's agent in the
  Cloudflare Agents SDK vocabulary (``_agent_protocol`` encodes and decodes, ``_websocket`` moves the frames),
  opened with the harvested cookies, user agent, client hints and the site's ``Origin``.
- ``inference`` (the seed's protocol, kept as the alternative): ``POST /api/inference`` answered with a Vercel AI
  data stream.

Pick one per call (``protocol=``), else ``HARVEST_CLOUDFLARE_PROTOCOL``, else ``[providers.cloudflare] protocol``
in the config file (the CLI passes it), else ``agent``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

from ._agent_protocol import (
    AgentDecoder,
    chat_request,
    new_agent_id,
    new_request_id,
    opening_frames,
    socket_url,
    split_messages,
)
from ._base import Decoder, Provider
from ._client import _merged
from ._config import ClientConfig
from ._decode import DataStreamItemDecoder, collapse
from ._exceptions import ProviderTimeout
from ._session import merge_set_cookies
from ._types import Chunk, Messages

if TYPE_CHECKING:
    from ._client import Call
    from ._websocket import WebSocket

Protocol = Literal["agent", "inference"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)
# The longest an upgrade may take (a handshake is one round trip plus TLS; the call's deadline may cut it shorter).
_CONNECT_TIMEOUT = 30.0


def resolve_protocol(protocol: str | None) -> Protocol:
    """The protocol of a call: the argument, else ``HARVEST_CLOUDFLARE_PROTOCOL``, else ``agent``.

    Raises:
        ValueError: not one of ``agent``, ``inference``.
    """
    chosen = protocol or ClientConfig.from_env("cloudflare").protocol or "agent"
    if chosen not in PROTOCOLS:
        raise ValueError(f"unknown Cloudflare protocol {chosen!r}; expected one of {', '.join(PROTOCOLS)}")
    return chosen  # type: ignore[return-value]


class _Collapsed:
    """``stream=False`` over a streaming endpoint: collect everything, yield it joined at the end."""

    def __init__(self, inner: Decoder) -> None:
        self._inner = inner
        self._items: list[Chunk] = []

    def feed(self, chunk: bytes) -> list[Chunk]:
        self._items += self._inner.feed(chunk)
        return []

    def close(self) -> list[Chunk]:
        return collapse(self._items + self._inner.close())


class Cloudflare(Provider):
    """Cloudflare AI playground: its WebSocket agent by default, ``/api/inference`` (data stream) on request."""

    label = "Cloudflare AI"
    url = "https://playground.ai.cloudflare.com"
    chat_path = "/api/inference"
    models_path = "/api/models"
    send_origin = True
    default_model = "@cf/meta/llama-3.3-70b-instruct-fp8-fast"
    # The aliases follow g4f's current table; the last three are our earlier names, kept working.
    model_aliases: ClassVar[dict[str, str]] = {
        "deepseek-coder-6.7b": "@hf/thebloke/deepseek-coder-6.7b-instruct-awq",
        "deepseek-coder-6.7b-base": "@hf/thebloke/deepseek-coder-6.7b-base-awq",
        "deepseek-distill-qwen-32b": "@cf/deepseek-ai/deepseek-r1-distill-qwen-32b",
        "deepseek-math-7b": "@cf/deepseek-ai/deepseek-math-7b-instruct",
        "discolm-german-7b-v1": "@cf/thebloke/discolm-german-7b-v1-awq",
        "falcon-7b": "@cf/tiiuae/falcon-7b-instruct",
        "gemma-2b-lora": "@cf/google/gemma-2b-it-lora",
        "gemma-3-12b": "@cf/google/gemma-3-12b-it",
        "gemma-4-26b-a4b-it": "@cf/google/gemma-4-26b-a4b-it",
        "gemma-7b": "@hf/google/gemma-7b-it",
        "gemma-7b-it-lora": "@cf/google/gemma-7b-it-lora",
        "gemma-sea-lion-v4-27b": "@cf/aisingapore/gemma-sea-lion-v4-27b-it",
        "glm-4.7-flash": "@cf/zai-org/glm-4.7-flash",
        "glm-5.2": "@cf/zai-org/glm-5.2",
        "gpt-oss-120b": "@cf/openai/gpt-oss-120b",
        "gpt-oss-20b": "@cf/openai/gpt-oss-20b",
        "granite-4.0-h-micro": "@cf/ibm-granite/granite-4.0-h-micro",
        "hermes-2-pro-mistral-7b": "@hf/nousresearch/hermes-2-pro-mistral-7b",
        "kimi-k2.6": "@cf/moonshotai/kimi-k2.6",
        "kimi-k2.7-code": "@cf/moonshotai/kimi-k2.7-code",
        "llama-2-13b": "@hf/thebloke/llama-2-13b-chat-awq",
        "llama-2-7b": "@cf/meta/llama-2-7b-chat-int8",
        "llama-2-7b-fp16": "@cf/meta/llama-2-7b-chat-fp16",
        "llama-2-7b-lora": "@cf/meta-llama/llama-2-7b-chat-hf-lora",
        "llama-3-8b": "@hf/meta-llama/meta-llama-3-8b-instruct",
        "llama-3.1-8b": "@cf/meta/llama-3.1-8b-instruct-fp8",
        "llama-3.2-11b-vision": "@cf/meta/llama-3.2-11b-vision-instruct",
        "llama-3.2-1b": "@cf/meta/llama-3.2-1b-instruct",
        "llama-3.2-3b": "@cf/meta/llama-3.2-3b-instruct",
        "llama-3.3-70b": "@cf/meta/llama-3.3-70b-instruct-fp8-fast",
        "llama-4-scout": "@cf/meta/llama-4-scout-17b-16e-instruct",
        "llama-guard-3-8b": "@cf/meta/llama-guard-3-8b",
        "llamaguard-7b": "@hf/thebloke/llamaguard-7b-awq",
        "mistral-7b-v0.1": "@hf/thebloke/mistral-7b-instruct-v0.1-awq",
        "mistral-7b-v0.2": "@hf/mistral/mistral-7b-instruct-v0.2",
        "mistral-7b-v0.2-lora": "@cf/mistral/mistral-7b-instruct-v0.2-lora",
        "mistral-small-3.1-24b": "@cf/mistralai/mistral-small-3.1-24b-instruct",
        "nemotron-3-120b": "@cf/nvidia/nemotron-3-120b-a12b",
        "neural-7b-v3-1": "@hf/thebloke/neural-chat-7b-v3-1-awq",
        "openchat-3.5-0106": "@cf/openchat/openchat-3.5-0106",
        "openhermes-2.5-mistral-7b": "@hf/thebloke/openhermes-2.5-mistral-7b-awq",
        "phi-2": "@cf/microsoft/phi-2",
        "qwen-1.5-1.8b": "@cf/qwen/qwen1.5-1.8b-chat",
        "qwen-1.5-14b": "@cf/qwen/qwen1.5-14b-chat-awq",
        "qwen-1.5-7b": "@cf/qwen/qwen1.5-7b-chat-awq",
        "qwen-2.5-coder-32b": "@cf/qwen/qwen2.5-coder-32b-instruct",
        "qwen1.5-0.5b": "@cf/qwen/qwen1.5-0.5b-chat",
        "qwen3-30b-a3b": "@cf/qwen/qwen3-30b-a3b-fp8",
        "qwq-32b": "@cf/qwen/qwq-32b",
        "sqlcoder-7b-2": "@cf/defog/sqlcoder-7b-2",
        "starling-lm-7b-beta": "@hf/nexusflow/starling-lm-7b-beta",
        "tinyllama-1.1b-v1.0": "@cf/tinyllama/tinyllama-1.1b-chat-v1.0",
        "una-cybertron-7b-v2-bf16": "@cf/fblgit/una-cybertron-7b-v2-bf16",
        "zephyr-7b-beta": "@hf/thebloke/zephyr-7b-beta-awq",
        "qwen-2.5-coder": "@cf/qwen/qwen2.5-coder-32b-instruct",
        "deepseek-r1-qwen-32b": "@cf/deepseek-ai/deepseek-r1-distill-qwen-32b",
        "mistral-7b": "@cf/mistral/mistral-7b-instruct-v0.2",
    }
    models: ClassVar[list[str]] = list(dict.fromkeys([default_model, *model_aliases.values()]))

    # -- agent: the WebSocket ------------------------------------------------------------------------------

    @classmethod
    def _own_chat(
        cls,
        call: Call,
        model: str,
        messages: Messages,
        *,
        stream: bool,
        temperature: float | None,
        protocol: str | None,
    ) -> AsyncIterator[Chunk] | None:
        """The agent socket's items, unless the call's protocol is ``inference`` (then the HTTP path: None).

        ``max_tokens`` and ``extra_body`` do not apply to the agent: its state has no such fields.

        Raises:
            ValueError: an unknown protocol.
        """
        if resolve_protocol(protocol) == "inference":
            return None
        return cls._agent_chat(call, model, messages, stream=stream, temperature=temperature)

    @classmethod
    async def _agent_chat(
        cls, call: Call, model: str, messages: Messages, *, stream: bool, temperature: float | None
    ) -> AsyncIterator[Chunk]:
        system, ui = split_messages(messages)
        agent_id = new_agent_id()
        client = call.client
        sock = await client._open(call, lambda c: client._retrying(lambda: cls._connect(c, agent_id, model)))
        try:
            for frame in opening_frames(agent_id, model=model, temperature=temperature, system=system):
                await sock.send(frame)
            request_id = new_request_id()
            await sock.send(chat_request(request_id, ui))
            decoder = AgentDecoder(request_id, cls.name())
            loop = asyncio.get_running_loop()
            deadline, idle = call.deadline, call.idle_timeout
            receive, feed = sock.receive, decoder.feed
            collected: list[Chunk] = []
            while not decoder.finished:
                # Every wait, the first frame's included, ends at the idle timeout or the call's deadline.
                left = deadline - loop.time()
                if left <= 0:
                    raise ProviderTimeout(
                        f"{cls.name()}: the call's deadline passed mid-reply",
                        deadline_passed=True,
                        provider=cls.name(),
                        url=sock.url,
                    )
                message = await receive(idle if idle < left else left)
                items = feed(message) if message is not None else decoder.close()
                if stream:
                    for item in items:
                        yield item
                else:
                    collected += items
            if not stream:
                for item in collapse(collected):
                    yield item
        finally:
            await sock.aclose()
            cls._remember_socket_cookies(call, sock)

    @classmethod
    async def _connect(cls, call: Call, agent_id: str, model: str) -> WebSocket:
        """One upgrade attempt with the call's identity: UA, client hints, cookies, and the page's origin."""
        left = call.deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise ProviderTimeout(
                f"{cls.name()}: the call's deadline passed", deadline_passed=True, provider=cls.name()
            )
        identity = call.identity
        headers = [
            ("Pragma", "no-cache"),
            ("Cache-Control", "no-cache"),
            *identity.header_lines(),
            ("Origin", call.site),
        ]
        url = socket_url(call.site, agent_id, model, str(uuid.uuid4()))
        return await call.client.websockets().connect(
            url,
            headers,
            timeout=min(_CONNECT_TIMEOUT, left),
            impersonate=identity.impersonate,
            proxy=identity.proxy,
            provider=cls.name(),
        )

    @classmethod
    def _remember_socket_cookies(cls, call: Call, sock: WebSocket) -> None:
        """Merge the upgrade answer's ``Set-Cookie`` into the cached record, as HTTP answers are."""
        record, set_cookies = call.identity.record, sock.set_cookies
        if record is None or not set_cookies or merge_set_cookies(record, set_cookies) is None:
            return
        call.remember(lambda current: _merged(current, record, set_cookies))

    # -- inference: the seed's HTTP protocol ----------------------------------------------------------------

    @classmethod
    def _chat_fields(
        cls, model: str, messages: list[Any], stream: bool, max_tokens: int | None, temperature: float | None
    ) -> dict[str, Any]:
        # The playground always streams; stream=False is handled by collecting (see `_decoder`).
        body: dict[str, Any] = {
            "messages": messages,
            "lora": None,
            "model": model,
            "max_tokens": max_tokens or 2048,
            "stream": True,
            "system_message": "You are a helpful assistant",
            "tools": [],
        }
        if temperature is not None:
            body["temperature"] = temperature
        return body

    @classmethod
    def _decoder(cls, stream: bool, content_type: str) -> Decoder:
        decoder = DataStreamItemDecoder(cls.name())
        return decoder if stream else _Collapsed(decoder)

    @classmethod
    def _parse_models(cls, data: Any) -> tuple[list[str], list[str]]:
        return [str(model["name"]) for model in data], []
