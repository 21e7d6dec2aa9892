"""Harvest browser sessions: a real Chromium clears a site's challenge, and the cookies, user agent, client
hints and API key become a ``SessionRecord`` in the shared cache.

>>> from harvester import harvest
>>> record = await harvest("cerebras")

Names are imported on first use, so ``import harvester`` stays cheap and never imports a browser driver.
"""

from __future__ import annotations

import importlib

# typing.TYPE_CHECKING without importing typing (mypy knows the name): the ``harvest`` command imports this
# package before it can install its quiet Ctrl-C handler (harvester._entry), so it stays as light as it can be.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ._classify import PageState, Verdict, classify
    from ._config import BrowserConfig, Config, DaemonConfig, ProviderConfig, ServerConfig, load_config
    from ._exceptions import (
        BlockedError,
        BrowserError,
        ChallengeTimeout,
        ConfigError,
        HarvestError,
        InvalidURLError,
        NeedsHeadfulError,
        ProxyAuthError,
        SiteUnreachableError,
        UnknownProviderError,
    )
    from ._harvest import Harvester
    from ._recipes import Recipe, known_providers, resolve_recipe
    from ._single_flight import HarvesterLike, SingleFlight, harvest

# public name -> defining module
_EXPORTS = {
    "BlockedError": "_exceptions",
    "BrowserConfig": "_config",
    "BrowserError": "_exceptions",
    "ChallengeTimeout": "_exceptions",
    "Config": "_config",
    "ConfigError": "_exceptions",
    "DaemonConfig": "_config",
    "HarvestError": "_exceptions",
    "Harvester": "_harvest",
    "HarvesterLike": "_single_flight",
    "InvalidURLError": "_exceptions",
    "NeedsHeadfulError": "_exceptions",
    "PageState": "_classify",
    "ProviderConfig": "_config",
    "ProxyAuthError": "_exceptions",
    "Recipe": "_recipes",
    "ServerConfig": "_config",
    "SingleFlight": "_single_flight",
    "SiteUnreachableError": "_exceptions",
    "UnknownProviderError": "_exceptions",
    "Verdict": "_classify",
    "classify": "_classify",
    "harvest": "_single_flight",
    "known_providers": "_recipes",
    "load_config": "_config",
    "resolve_recipe": "_recipes",
}

__all__ = [
    "BlockedError",
    "BrowserConfig",
    "BrowserError",
    "ChallengeTimeout",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "HarvestError",
    "Harvester",
    "HarvesterLike",
    "InvalidURLError",
    "NeedsHeadfulError",
    "PageState",
    "ProviderConfig",
    "ProxyAuthError",
    "Recipe",
    "ServerConfig",
    "SingleFlight",
    "SiteUnreachableError",
    "UnknownProviderError",
    "Verdict",
    "classify",
    "harvest",
    "known_providers",
    "load_config",
    "resolve_recipe",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'harvester' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"harvester.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
