"""Refreshing a refused session: the ``Refresher`` seam between the clients and the harvester.

A client that is refused (a challenge, 401 or 403) asks its ``Refresher`` for a fresh record and retries once.
``providers`` depends on the protocol only; ``default_refresher`` holds the one (lazy) ``import harvester`` in
the package, so the clients never import a browser driver, and without one they raise ``MissingAuthError``
naming the command to run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._exceptions import MissingAuthError

if TYPE_CHECKING:
    from cache import AuthCache, SessionRecord


@runtime_checkable
class Refresher(Protocol):
    """Supplies a fresh record for a session that was refused. Implemented by ``harvester.SingleFlight``."""

    async def refresh(
        self, name: str, *, stale: SessionRecord | None, base_url: str | None = None, proxy: str | None = None
    ) -> SessionRecord:
        """A record newer than ``stale``: one already stored by another caller, else a fresh harvest (stored).

        A failed refresh raises and never deletes ``stale`` from the cache.

        Raises:
            MissingAuthError: no record could be had; the message names the command to run.
        """
        ...


def harvest_command(provider: str, *, base_url: str | None = None, headful: bool = False) -> str:
    """The exact shell command that harvests ``provider``'s session."""
    command = f"harvest --provider {provider}"
    if base_url:
        command += f" --base-url {base_url}"
    if headful:
        command += " --headful"
    return command


def default_refresher(cache: AuthCache) -> Refresher:
    """The harvester's single flight over ``cache``: one browser run per record, across tasks and processes."""
    return _HarvesterRefresher(cache)


class _HarvesterRefresher:
    """``harvester.SingleFlight`` behind the ``Refresher`` protocol, with harvester errors mapped to ours."""

    def __init__(self, cache: AuthCache) -> None:
        self._cache = cache
        self._flight: Any = None  # the harvester's SingleFlight (its lock table), made on the first refresh
        self._active = 0  # refreshes in progress (running or queued in the single flight)

    async def refresh(
        self, name: str, *, stale: SessionRecord | None, base_url: str | None = None, proxy: str | None = None
    ) -> SessionRecord:
        try:
            import harvester  # the one import of the harvester in providers: a heal is rare, a browser heavy
        except ImportError as exc:
            raise MissingAuthError(
                f"{name}: no usable session and the harvester is not available here; "
                f"run `{harvest_command(name, base_url=base_url)}`",
                provider=name,
            ) from exc
        if self._flight is None:
            self._flight = harvester.SingleFlight(self._cache)
        flight = self._flight
        self._active += 1
        try:
            record: SessionRecord = await flight.refresh(name, stale=stale, base_url=base_url, proxy=proxy)
            return record
        except harvester.NeedsHeadfulError as exc:
            raise MissingAuthError(_failed(name, stale, exc, base_url, headful=True), provider=name) from exc
        except harvester.HarvestError as exc:
            raise MissingAuthError(_failed(name, stale, exc, base_url, headful=False), provider=name) from exc
        finally:
            # A heal is rare: the browser goes when the last refresh is done, rather than idling until the
            # client closes (the SingleFlight, and with it the lock table, stays).
            self._active -= 1
            if self._active == 0:
                await flight.harvester.close_browser()

    async def aclose(self) -> None:
        """Close the harvester the single flight made, if any."""
        if self._flight is not None:
            await self._flight.aclose()


def _failed(name: str, stale: SessionRecord | None, exc: Exception, base_url: str | None, *, headful: bool) -> str:
    """Why the refresh failed, without calling a session "expired" that is not."""
    if stale is None:
        what = "no session is cached and harvesting one failed"
    elif stale.is_expired:
        what = "the session expired and harvesting a new one failed"
    else:
        what = "the provider refused the session and harvesting a new one failed (the cached one is kept)"
    return f"{name}: {what} ({exc}); run `{harvest_command(name, base_url=base_url, headful=headful)}`"
