"""One loop timer that fires at the earliest time it was asked for: the transport's watchdog and curl's timers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class EarliestTimer:
    """One loop timer that calls ``callback`` at the earliest time it was asked for since it last fired.

    Asking for a later time than it is set for changes nothing, so a stream of requests (one per transfer, or
    one per curl timer) costs a loop timer only when it must fire sooner.
    """

    __slots__ = ("_at", "_callback", "_handle", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        self._loop = loop
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None
        self._at = 0.0

    def at_most(self, when: float) -> None:
        """Make sure the callback runs no later than ``when`` (loop time)."""
        if self._handle is None or self._at > when:
            if self._handle is not None:
                self._handle.cancel()
            self._at = when
            self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        self._callback()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
