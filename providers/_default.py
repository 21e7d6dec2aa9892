"""The default clients behind the classmethod API (``Cerebras.create_async_generator`` and friends).

The classmethods take a cache, base URL and proxy per call, so each distinct combination gets its own
``Client``; all of one event loop's default clients share one ``CurlTransport`` (so connections stay warm
across providers) and one environment cache. Code that wants none of this makes its own ``Client``.

This is the one piece of module state in ``providers``: the clients of each event loop, dropped with the
loop (weak keys) or by ``close_transport()``, which the CLI and tests call before their loop ends.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._client import Client

if TYPE_CHECKING:
    from cache import AuthCache

    from ._base import Provider
    from ._transport import CurlTransport

#: Default clients kept per loop; beyond this (many distinct base URLs or proxies) the oldest is retired.
_MAX_CLIENTS = 64

_Key = tuple["type[Provider]", "AuthCache | None", "str | None", "str | None"]


class _LoopDefaults:
    """One event loop's default clients, their shared transport and the environment's cache."""

    def __init__(self) -> None:
        self.clients: dict[_Key, Client] = {}
        # Clients pushed out by the cap: kept until their cookie merges are done, closed with the rest.
        self.retired: list[Client] = []
        self._transport: CurlTransport | None = None
        self._cache: AuthCache | None = None

    def client(
        self, provider: type[Provider], cache: AuthCache | None, base_url: str | None, proxy: str | None
    ) -> Client:
        key = (provider, cache, base_url, proxy)
        client = self.clients.get(key)
        if client is None:
            if self._transport is None:
                from ._transport import CurlTransport

                self._transport = CurlTransport()
            if cache is None and provider.uses_session:
                if self._cache is None:
                    from cache import AuthCache

                    self._cache = AuthCache.open()
                cache = self._cache
            if len(self.clients) >= _MAX_CLIENTS:
                self.retired.append(self.clients.pop(next(iter(self.clients))))
            client = self.clients[key] = Client(
                provider, cache=cache, transport=self._transport, base_url=base_url, proxy=proxy
            )
        return client

    async def aclose(self) -> None:
        for client in [*self.retired, *self.clients.values()]:
            await client.aclose()
        self.clients.clear()
        self.retired.clear()
        if self._transport is not None:
            await self._transport.aclose()


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopDefaults] = weakref.WeakKeyDictionary()


def _dead_ref() -> None:
    return None


# Weak references to the last loop looked up and its defaults: the common case skips the weak dict.
_last: tuple[Callable[[], asyncio.AbstractEventLoop | None], Callable[[], _LoopDefaults | None]] = (
    _dead_ref,
    _dead_ref,
)


def default_client(
    provider: type[Provider], *, cache: AuthCache | None, base_url: str | None, proxy: str | None
) -> Client | None:
    """The running loop's default client for these settings, or None outside a running loop."""
    global _last
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    defaults = _last[1]()
    if defaults is None or _last[0]() is not loop:
        defaults = _per_loop.get(loop)
        if defaults is None:
            defaults = _per_loop[loop] = _LoopDefaults()
        _last = (weakref.ref(loop), weakref.ref(defaults))
    return defaults.client(provider, cache, base_url, proxy)


async def close_transport() -> None:
    """Close the running loop's default clients: wait for their cache writes, then close their transport."""
    global _last
    defaults = _per_loop.pop(asyncio.get_running_loop(), None)
    if defaults is _last[1]():
        _last = (_dead_ref, _dead_ref)
    if defaults is not None:
        await defaults.aclose()
