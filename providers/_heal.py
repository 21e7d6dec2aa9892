"""Healing a dead session: drop the record we used (only if it is still that record) and harvest a fresh one.

This is the only module that talks to the harvester, and it imports it lazily: the provider clients never
import a browser driver, and without one they raise ``MissingAuthError`` naming the command to run.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING

from ._exceptions import MissingAuthError

if TYPE_CHECKING:
    from cache import AuthCache, SessionRecord


def harvest_command(provider: str, *, base_url: str | None = None, headful: bool = False) -> str:
    """The exact shell command that harvests ``provider``'s session."""
    command = f"harvest --provider {provider}"
    if base_url:
        command += f" --base-url {base_url}"
    if headful:
        command += " --headful"
    return command


async def harvest(
    provider: str, *, cache: AuthCache, base_url: str | None = None, proxy: str | None = None
) -> SessionRecord:
    """Harvest a fresh record through the harvester (single-flight inside it) and make sure it is cached.

    Raises:
        MissingAuthError: no browser here, or the harvest failed; the message names the command to run.
    """
    try:
        import harvester
        from harvester import HarvestError
    except ImportError as exc:
        raise MissingAuthError(
            f"{provider}: no usable session and the harvester is not available here; "
            f"run `{harvest_command(provider, base_url=base_url)}`",
            provider=provider,
        ) from exc
    try:
        record: SessionRecord = await harvester.harvest(provider, base_url=base_url, proxy=proxy, cache=cache)
    except HarvestError as exc:
        headful = type(exc).__name__ == "NeedsHeadfulError"
        raise MissingAuthError(
            f"{provider}: the session expired and harvesting it failed ({exc}); "
            f"run `{harvest_command(provider, base_url=base_url, headful=headful)}`",
            provider=provider,
        ) from exc
    current = cache.get(provider)
    if current is None or current.harvested_at < record.harvested_at:
        await asyncio.to_thread(cache.put, record)
    return record


# One lock per (event loop, provider). It protects the check-the-cache-then-harvest sequence, so callers in
# this process that fail together see the first one's fresh record instead of each starting a harvest.
_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = weakref.WeakKeyDictionary()


def _lock_for(provider: str) -> asyncio.Lock:
    per_loop = _locks.setdefault(asyncio.get_running_loop(), {})
    lock = per_loop.get(provider)
    if lock is None:
        lock = per_loop[provider] = asyncio.Lock()
    return lock


async def heal(
    provider: str,
    used: SessionRecord | None,
    *,
    cache: AuthCache,
    base_url: str | None = None,
    proxy: str | None = None,
) -> SessionRecord:
    """Replace the record ``used`` by a request that was refused, and return the one to retry with.

    If the cache already holds another record (a concurrent caller healed first), that one is returned
    without a harvest. Otherwise ``used`` is deleted with a compare-and-delete (only if the cached record is
    still the one we used, judged by ``harvested_at``) and a fresh one is harvested.
    """
    async with _lock_for(provider):
        current = cache.get(provider)
        if current is not None and not current.is_expired and (used is None or _newer(current, used)):
            return current
        if current is not None and used is not None and current.harvested_at == used.harvested_at:
            await asyncio.to_thread(cache.update, provider, lambda cur: _drop_if_same(cur, used))
        return await harvest(provider, cache=cache, base_url=base_url, proxy=proxy)


def _newer(current: SessionRecord, used: SessionRecord) -> bool:
    return current.harvested_at > used.harvested_at


def _drop_if_same(current: SessionRecord | None, used: SessionRecord) -> SessionRecord | None:
    """The compare-and-delete: delete only the very record that failed, never a fresher one."""
    if current is not None and current.harvested_at == used.harvested_at:
        return None
    return current
