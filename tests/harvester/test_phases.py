"""The per-phase breakdown behind `harvest -v` and `scripts/bench harvest`: steps to timed phases (pure)."""

from __future__ import annotations

from harvester._phases import Timeline, phase_of


def test_steps_map_to_phases() -> None:
    """Every step the harvester reports starts a known phase, and unknown text starts none."""
    assert phase_of("launching Chromium") == "launch"
    assert phase_of("loading http://x/") == "navigate"
    assert phase_of("waiting for a person (login)") == "challenge"
    assert phase_of("the site is failing; retrying") == "challenge"
    assert phase_of("saving to the cache") == "save"
    assert phase_of("something else") is None


def test_timeline_times_each_phase_until_the_next() -> None:
    """A phase lasts until the next phase starts; repeats of one phase add up; end() closes the last one."""
    now = [0.0]
    timeline = Timeline(clock=lambda: now[0])
    for at, text in [
        (0.0, "launching Chromium"),
        (0.3, "attaching to Chromium"),
        (0.35, "opening a tab"),
        (0.4, "loading http://x/"),
        (0.5, "waiting for the challenge"),
        (0.9, "collecting cookies"),
    ]:
        now[0] = at
        timeline.step(text)
    now[0] = 1.0
    timeline.end("teardown")
    now[0] = 1.2
    timeline.end()
    durations = {k: round(v, 3) for k, v in timeline.durations.items()}
    assert durations == {
        "launch": 0.3,
        "attach": 0.05,
        "tab": 0.05,
        "navigate": 0.1,
        "challenge": 0.4,
        "cookies": 0.1,
        "teardown": 0.2,
    }
    assert timeline.describe().startswith("launch 0.30 s · attach 0.05 s")
    assert round(timeline.total, 3) == 1.2
