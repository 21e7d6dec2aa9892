"""Fast provider clients that reuse harvested browser sessions.

>>> from providers import Cerebras
>>> async for chunk in Cerebras.create_async_generator("llama3.1-8b", [{"role": "user", "content": "Hi"}]):
...     print(chunk, end="")

Names are imported on first use, so ``import providers`` stays cheap: curl_cffi is loaded only when a
request is made (the ``harvest cache`` commands import this package and must stay fast).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._base import Provider
    from ._cerebras import Cerebras
    from ._cloudflare import Cloudflare
    from ._compatible import OpenAICompatible
    from ._deepinfra import DeepInfra
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
    from ._registry import PROVIDERS, get_provider
    from ._sse import ServerSentEvent, SSEDecoder
    from ._transport import close_transport
    from ._types import Chunk, FinishReason, ImageResponse, Reasoning, Usage

# public name -> the internal module that defines it
_LAZY = {
    "Cerebras": "._cerebras",
    "Chunk": "._types",
    "Cloudflare": "._cloudflare",
    "CloudflareError": "._exceptions",
    "ConnectError": "._exceptions",
    "DeepInfra": "._deepinfra",
    "FinishReason": "._types",
    "FreeNetfly": "._freenetfly",
    "ImageResponse": "._types",
    "MissingAuthError": "._exceptions",
    "ModelNotFoundError": "._exceptions",
    "OpenAICompatible": "._compatible",
    "PROVIDERS": "._registry",
    "Provider": "._base",
    "ProviderError": "._exceptions",
    "ProviderTimeout": "._exceptions",
    "RateLimitError": "._exceptions",
    "Reasoning": "._types",
    "ResponseStatusError": "._exceptions",
    "SSEDecoder": "._sse",
    "ServerSentEvent": "._sse",
    "StreamError": "._exceptions",
    "TransportError": "._exceptions",
    "Usage": "._types",
    "close_transport": "._transport",
    "get_provider": "._registry",
}

__all__ = [
    "PROVIDERS",
    "Cerebras",
    "Chunk",
    "Cloudflare",
    "CloudflareError",
    "ConnectError",
    "DeepInfra",
    "FinishReason",
    "FreeNetfly",
    "ImageResponse",
    "MissingAuthError",
    "ModelNotFoundError",
    "OpenAICompatible",
    "Provider",
    "ProviderError",
    "ProviderTimeout",
    "RateLimitError",
    "Reasoning",
    "ResponseStatusError",
    "SSEDecoder",
    "ServerSentEvent",
    "StreamError",
    "TransportError",
    "Usage",
    "close_transport",
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
