"""When to refresh a provider next: pure functions of the record, the policy and a random source.

No clock, no I/O: the daemon passes ``now`` in, so every rule here is trivial to test.

* A healthy record is refreshed at ``expires_at - margin``, where the margin is 10% of the record's TTL and
  at least ``min_margin`` seconds, capped by the provider's ``refresh_interval``, minus a little jitter
  (jitter only ever moves a refresh earlier, never past the expiry).
* A missing or expired record is refreshed now.
* After ``n`` consecutive failures the next attempt waits ``backoff_base * 2**(n-1)``, capped at
  ``backoff_cap`` (30 min), with jitter so several providers failing together do not retry in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol


class RandomSource(Protocol):
    """The one method of ``random.Random`` the schedule uses (tests pass a fixed one)."""

    def uniform(self, a: float, b: float) -> float: ...


@dataclass(frozen=True, slots=True)
class SchedulePolicy:
    """The knobs of the refresh schedule; defaults are the production values."""

    margin_ratio: float = 0.10  # refresh this fraction of the TTL ahead of expiry...
    min_margin: float = 60.0  # ...but at least this many seconds ahead
    jitter_ratio: float = 0.10  # up to this fraction of the margin is taken off at random
    backoff_base: float = 30.0  # first retry after a failure
    backoff_cap: float = 1800.0  # never wait longer than 30 min between retries
    default_interval: float = 3600.0  # a record with no expiry is refreshed this often


def margin_for(ttl: float, policy: SchedulePolicy) -> float:
    """Return how many seconds ahead of expiry a record with this TTL is refreshed."""
    return max(policy.margin_ratio * max(ttl, 0.0), policy.min_margin)


def next_refresh(
    now: datetime,
    *,
    harvested_at: datetime | None,
    expires_at: datetime | None,
    refresh_interval: float | None,
    policy: SchedulePolicy,
    rng: RandomSource = random,
) -> datetime:
    """Return when to refresh a record next (never before ``now``).

    Args:
        now: the current aware time.
        harvested_at: when the record was harvested, or None if there is no record.
        expires_at: when the record expires, or None if it does not say.
        refresh_interval: the provider's cap in seconds between refreshes, or None.
        policy: margins and jitter.
        rng: the random source for the jitter.
    """
    if harvested_at is None or (expires_at is not None and expires_at <= now):
        return now
    candidates: list[datetime] = []
    if expires_at is not None:
        ttl = (expires_at - harvested_at).total_seconds()
        margin = margin_for(ttl, policy)
        jitter = rng.uniform(0.0, policy.jitter_ratio * margin)
        candidates.append(expires_at - timedelta(seconds=margin + jitter))
    if refresh_interval is not None:
        candidates.append(harvested_at + timedelta(seconds=refresh_interval))
    if not candidates:
        candidates.append(harvested_at + timedelta(seconds=policy.default_interval))
    return max(now, min(candidates))


def backoff_delay(failures: int, policy: SchedulePolicy, rng: RandomSource = random) -> float:
    """Return the seconds to wait after ``failures`` consecutive failures (``failures >= 1``).

    The delay doubles per failure up to ``backoff_cap``; jitter takes up to a quarter off, never adds.
    """
    if failures < 1:
        return 0.0
    # Clamp the exponent: 2**1000 is a float overflow waiting to happen for a provider down for weeks.
    raw = policy.backoff_base * 2.0 ** min(failures - 1, 32)
    capped = min(raw, policy.backoff_cap)
    return capped - rng.uniform(0.0, 0.25 * capped)
