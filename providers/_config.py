"""Client settings from the environment: the only place the provider clients read ``os.environ``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from cache._origin import base_url_variable


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Per-provider settings that come from outside the call."""

    #: ``HARVEST_<PROVIDER>_BASE_URL``: rebase every endpoint of that provider onto this origin.
    base_url: str | None = None
    #: ``HARVEST_<PROVIDER>_PROTOCOL``: the wire protocol, for a provider that speaks more than one (Cloudflare).
    protocol: str | None = None

    @classmethod
    def from_env(cls, provider: str, environ: Mapping[str, str] | None = None) -> ClientConfig:
        """Read ``HARVEST_<PROVIDER>_BASE_URL`` (the variable the harvester reads too: ``cache._origin``) and
        ``HARVEST_<PROVIDER>_PROTOCOL``."""
        env = os.environ if environ is None else environ
        protocol_variable = base_url_variable(provider).removesuffix("_BASE_URL") + "_PROTOCOL"
        return cls(
            base_url=env.get(base_url_variable(provider)) or None,
            protocol=(env.get(protocol_variable) or "").strip().lower() or None,
        )
