"""Provider lookup by name, for the CLI and the demo."""

from __future__ import annotations

from ._base import Provider
from ._cerebras import Cerebras
from ._cloudflare import Cloudflare
from ._compatible import OpenAICompatible
from ._deepinfra import DeepInfra
from ._freenetfly import FreeNetfly

#: Every provider by its name (the cache record name): ``cloudflare``, ``cerebras``...
PROVIDERS: dict[str, type[Provider]] = {
    cls.name(): cls for cls in (Cloudflare, Cerebras, DeepInfra, FreeNetfly, OpenAICompatible)
}


def get_provider(name: str) -> type[Provider]:
    """The provider class called ``name`` (case-insensitive).

    Raises:
        ValueError: no provider by that name; the message lists the known ones.
    """
    try:
        return PROVIDERS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown provider {name!r}; known: {', '.join(sorted(PROVIDERS))}") from None
