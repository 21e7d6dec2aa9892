"""Fast provider clients that reuse harvested browser sessions.

>>> from providers import Cerebras
>>> async for chunk in Cerebras.create_async_generator("llama3.1-8b", [{"role": "user", "content": "Hi"}]):
...     print(chunk, end="")

or, with the connection pool, cache, transport and refresher in one object you own and close:

>>> async with Client("cerebras") as client:
...     async for chunk in client.chat([{"role": "user", "content": "Hi"}], "llama3.1-8b"):
...         print(chunk, end="")

Names are imported on first use, so ``import providers`` stays cheap: curl_cffi is loaded only when a
request is made (the ``harvest cache`` commands import this package and must stay fast).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._base import Provider
    from ._cerebras import Cerebras
    from ._client import Client
    from ._cloudflare import Cloudflare
    from ._compatible import OpenAICompatible
    from ._deepinfra import DeepInfra
    from ._default import close_transport
    from ._exceptions import (
        CloudflareError,
        ConnectError,
        MissingAuthError,
        ModelNotFoundError,
        ProviderError,
        ProviderTimeout,
        RateLimitError,
        ResponseStatusError,
        StreamError,
        TransportError,
    )
    from ._freenetfly import FreeNetfly
    from ._refresh import Refresher, default_refresher
    from ._registry import PROVIDERS, get_provider
    from ._sse import ServerSentEvent, SSEDecoder
    from ._transport import AsyncTransport, CurlTransport, MockResponse, MockTransport, Request, Response
    from ._types import Chunk, FinishReason, ImageResponse, Reasoning, Usage

# public name -> the internal module that defines it
_LAZY = {
    "AsyncTransport": "._transport",
    "Cerebras": "._cerebras",
    "Chunk": "._types",
    "Client": "._client",
    "Cloudflare": "._cloudflare",
    "CloudflareError": "._exceptions",
    "ConnectError": "._exceptions",
    "CurlTransport": "._transport",
    "DeepInfra": "._deepinfra",
    "FinishReason": "._types",
    "FreeNetfly": "._freenetfly",
    "ImageResponse": "._types",
    "MissingAuthError": "._exceptions",
    "MockResponse": "._transport",
    "MockTransport": "._transport",
    "ModelNotFoundError": "._exceptions",
    "OpenAICompatible": "._compatible",
    "PROVIDERS": "._registry",
    "Provider": "._base",
    "ProviderError": "._exceptions",
    "ProviderTimeout": "._exceptions",
    "RateLimitError": "._exceptions",
    "Reasoning": "._types",
    "Refresher": "._refresh",
    "Request": "._transport",
    "Response": "._transport",
    "ResponseStatusError": "._exceptions",
    "SSEDecoder": "._sse",
    "ServerSentEvent": "._sse",
    "StreamError": "._exceptions",
    "TransportError": "._exceptions",
    "Usage": "._types",
    "close_transport": "._default",
    "default_refresher": "._refresh",
    "get_provider": "._registry",
}

__all__ = [
    "PROVIDERS",
    "AsyncTransport",
    "Cerebras",
    "Chunk",
    "Client",
    "Cloudflare",
    "CloudflareError",
    "ConnectError",
    "CurlTransport",
    "DeepInfra",
    "FinishReason",
    "FreeNetfly",
    "ImageResponse",
    "MissingAuthError",
    "MockResponse",
    "MockTransport",
    "ModelNotFoundError",
    "OpenAICompatible",
    "Provider",
    "ProviderError",
    "ProviderTimeout",
    "RateLimitError",
    "Reasoning",
    "Refresher",
    "Request",
    "Response",
    "ResponseStatusError",
    "SSEDecoder",
    "ServerSentEvent",
    "StreamError",
    "TransportError",
    "Usage",
    "close_transport",
    "default_refresher",
    "get_provider",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'providers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
