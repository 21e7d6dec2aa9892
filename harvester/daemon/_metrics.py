"""Prometheus metrics for the daemon, in a registry of its own (never the process-global one).

A dedicated ``CollectorRegistry`` keeps tests and embedders free of "Duplicated timeseries" errors, and
lets the daemon drop a removed provider's series, so a long run of reloads does not grow memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cache import utcnow

Outcome = Literal["success", "failure", "cancelled"]

# Harvests take from under a second (warm browser, no challenge) to a minute (cold start, challenge).
_DURATION_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)


class _LiveCollector(Collector):
    """Values read at scrape time: record ages and the harvester's browser restart counter."""

    def __init__(
        self,
        harvested_at: Callable[[], Mapping[str, datetime | None]],
        browser_restarts: Callable[[], int],
        browser_running: Callable[[], bool],
    ) -> None:
        self._harvested_at = harvested_at
        self._browser_restarts = browser_restarts
        self._browser_running = browser_running

    def describe(self) -> Iterator[Metric]:
        # Names only, so registering does not call the callbacks before the daemon has a harvester.
        yield GaugeMetricFamily("harvest_record_age_seconds", "", labels=["provider"])
        yield CounterMetricFamily("harvest_browser_restarts", "")
        yield GaugeMetricFamily("harvest_browser_running", "")

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        age = GaugeMetricFamily(
            "harvest_record_age_seconds", "Seconds since the provider's record was harvested.", labels=["provider"]
        )
        for name, when in sorted(self._harvested_at().items()):
            if when is not None:
                age.add_metric([name], max((now - when).total_seconds(), 0.0))
        yield age
        restarts = CounterMetricFamily(
            "harvest_browser_restarts", "Browsers replaced after a crash or a lost CDP connection."
        )
        restarts.add_metric([], float(self._browser_restarts()))
        yield restarts
        running = GaugeMetricFamily("harvest_browser_running", "1 while the shared browser is up.")
        running.add_metric([], 1.0 if self._browser_running() else 0.0)
        yield running


class DaemonMetrics:
    """The daemon's counters and histograms, and their text exposition."""

    def __init__(
        self,
        *,
        harvested_at: Callable[[], Mapping[str, datetime | None]],
        browser_restarts: Callable[[], int],
        browser_running: Callable[[], bool],
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.harvests = Counter(
            "harvest_harvests",
            "Harvests by provider and outcome.",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "harvest_harvest_duration_seconds",
            "Wall time of one harvest.",
            ["provider"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(harvested_at, browser_restarts, browser_running))

    def observe(self, provider: str, outcome: Outcome, seconds: float) -> None:
        """Count one harvest and its duration."""
        self.harvests.labels(provider=provider, outcome=outcome).inc()
        self.duration.labels(provider=provider).observe(seconds)

    def forget(self, provider: str) -> None:
        """Drop a removed provider's series."""
        for outcome in ("success", "failure", "cancelled"):
            try:
                self.harvests.remove(provider, outcome)
            except KeyError:
                pass
        try:
            self.duration.remove(provider)
        except KeyError:
            pass

    def exposition(self) -> bytes:
        """Return the metrics in Prometheus text format."""
        return generate_latest(self.registry)
