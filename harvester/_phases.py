"""Where a harvest's time goes: the progress steps it reports, turned into per-phase durations (pure).

The harvester reports steps as text for people (``on_step``); :class:`Timeline` maps each step to a phase
(launch, attach, tab, navigate, challenge, session, cookies, save) and times them. ``harvest -v`` prints the
breakdown, and ``scripts/bench harvest`` sums it over runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: The phases, in the order a harvest goes through them ("wait": for another harvest of the name, or for the
#: browser another task is launching).
PHASES = ("wait", "launch", "attach", "tab", "navigate", "challenge", "session", "cookies", "save", "teardown")

# Step text (its start) -> phase.
_STEPS = (
    ("waiting for other harvests", "wait"),
    ("launching Chromium", "launch"),
    ("attaching to Chromium", "attach"),
    ("opening a tab", "tab"),
    ("loading ", "navigate"),
    ("waiting for the challenge", "challenge"),
    ("the site is failing", "challenge"),
    ("waiting for a person", "challenge"),
    ("reading the session", "session"),
    ("collecting cookies", "cookies"),
    ("saving to the cache", "save"),
)


def phase_of(step: str) -> str | None:
    """The phase a progress step starts (None: a step that starts no phase)."""
    for prefix, phase in _STEPS:
        if step.startswith(prefix):
            return phase
    return None


class Timeline:
    """Per-phase durations of one harvest, from its progress steps: a phase lasts until the next one starts.

    Use :meth:`step` as (or inside) the ``on_step`` callback and call :meth:`end` when the harvest returns.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._started = clock()
        self._current: str | None = None
        self._since = self._started
        self.durations: dict[str, float] = {}

    def step(self, text: str) -> None:
        """Note a progress step (it may start a new phase)."""
        phase = phase_of(text)
        if phase is not None and phase != self._current:
            self._switch(phase)

    def end(self, phase: str | None = None) -> None:
        """Close the current phase (and time ``phase`` from here on, e.g. "teardown", until the next call)."""
        self._switch(phase)

    @property
    def total(self) -> float:
        """Seconds from the start to the last phase switch."""
        return self._since - self._started

    def describe(self) -> str:
        """``launch 0.35 s · attach 0.05 s · ...`` in phase order (phases that did not happen are left out)."""
        return " · ".join(f"{name} {self.durations[name]:.2f} s" for name in PHASES if name in self.durations)

    def _switch(self, phase: str | None) -> None:
        now = self._clock()
        if self._current is not None:
            self.durations[self._current] = self.durations.get(self._current, 0.0) + now - self._since
        self._current, self._since = phase, now
