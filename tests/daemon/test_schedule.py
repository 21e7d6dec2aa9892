"""The pure refresh schedule: margins, caps, jitter and backoff."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from harvester.daemon import SchedulePolicy, backoff_delay, next_refresh

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
NO_JITTER = SchedulePolicy(jitter_ratio=0.0)


class _Max:
    """A random source that always returns the top of the range."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_missing_record_is_due_now() -> None:
    """A provider with no record is harvested at once."""
    assert next_refresh(NOW, harvested_at=None, expires_at=None, refresh_interval=None, policy=NO_JITTER) == NOW


def test_expired_record_is_due_now() -> None:
    """An expired record is harvested at once."""
    when = next_refresh(
        NOW,
        harvested_at=NOW - timedelta(hours=2),
        expires_at=NOW - timedelta(seconds=1),
        refresh_interval=None,
        policy=NO_JITTER,
    )
    assert when == NOW


def test_margin_is_ten_percent_of_the_ttl() -> None:
    """A 2-hour record is refreshed 12 minutes (10% of its TTL) before it expires."""
    when = next_refresh(
        NOW, harvested_at=NOW, expires_at=NOW + timedelta(hours=2), refresh_interval=None, policy=NO_JITTER
    )
    assert when == NOW + timedelta(hours=2) - timedelta(minutes=12)


def test_margin_is_at_least_min_margin() -> None:
    """A 5-minute record is refreshed 60 s ahead, not 30 s (10%)."""
    when = next_refresh(
        NOW, harvested_at=NOW, expires_at=NOW + timedelta(minutes=5), refresh_interval=None, policy=NO_JITTER
    )
    assert when == NOW + timedelta(minutes=4)


def test_min_margin_is_configurable_for_short_ttls() -> None:
    """With min_margin=2, a 6-second record is refreshed 2 s before it expires."""
    policy = SchedulePolicy(min_margin=2.0, jitter_ratio=0.0)
    when = next_refresh(
        NOW, harvested_at=NOW, expires_at=NOW + timedelta(seconds=6), refresh_interval=None, policy=policy
    )
    assert when == NOW + timedelta(seconds=4)


def test_refresh_interval_caps_the_wait() -> None:
    """A provider's refresh_interval wins when it comes before the expiry margin."""
    when = next_refresh(
        NOW, harvested_at=NOW, expires_at=NOW + timedelta(hours=24), refresh_interval=600, policy=NO_JITTER
    )
    assert when == NOW + timedelta(seconds=600)


def test_record_without_expiry_uses_interval_or_default() -> None:
    """A record that never expires is refreshed every refresh_interval, else every default_interval."""
    with_interval = next_refresh(NOW, harvested_at=NOW, expires_at=None, refresh_interval=90, policy=NO_JITTER)
    without = next_refresh(NOW, harvested_at=NOW, expires_at=None, refresh_interval=None, policy=NO_JITTER)
    assert with_interval == NOW + timedelta(seconds=90)
    assert without == NOW + timedelta(seconds=NO_JITTER.default_interval)


def test_refresh_is_never_in_the_past() -> None:
    """A record inside its margin (but not expired) is due now, not at a past time."""
    when = next_refresh(
        NOW,
        harvested_at=NOW - timedelta(hours=1),
        expires_at=NOW + timedelta(seconds=5),
        refresh_interval=None,
        policy=NO_JITTER,
    )
    assert when == NOW


@pytest.mark.parametrize("seed", range(20))
def test_jitter_only_moves_a_refresh_earlier(seed: int) -> None:
    """Jitter takes at most jitter_ratio of the margin off, and never pushes a refresh later."""
    policy = SchedulePolicy()
    latest = NOW + timedelta(hours=2) - timedelta(minutes=12)
    earliest = latest - timedelta(minutes=12 * policy.jitter_ratio)
    when = next_refresh(
        NOW,
        harvested_at=NOW,
        expires_at=NOW + timedelta(hours=2),
        refresh_interval=None,
        policy=policy,
        rng=random.Random(seed),
    )
    assert earliest <= when <= latest


def test_backoff_doubles_then_caps_at_thirty_minutes() -> None:
    """Backoff is base * 2**(n-1), capped at 30 min (jitter off)."""
    zero = type("Zero", (), {"uniform": lambda self, a, b: a})()
    policy = SchedulePolicy(backoff_base=30.0)
    delays = [backoff_delay(n, policy, zero) for n in range(1, 9)]
    assert delays == [30, 60, 120, 240, 480, 960, 1800, 1800]
    assert backoff_delay(10_000, policy, zero) == 1800


def test_backoff_jitter_never_exceeds_the_cap() -> None:
    """Backoff jitter takes at most a quarter off and never adds."""
    policy = SchedulePolicy(backoff_base=1.0)
    assert backoff_delay(3, policy, _Max()) == pytest.approx(3.0)
    for seed in range(50):
        assert 3.0 <= backoff_delay(3, policy, random.Random(seed)) <= 4.0


def test_no_failures_means_no_backoff() -> None:
    """Zero consecutive failures waits zero seconds."""
    assert backoff_delay(0, SchedulePolicy()) == 0.0
