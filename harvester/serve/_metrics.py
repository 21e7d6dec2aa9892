"""Prometheus metrics of the server, in a registry of its own (never the process-global one).

The per-request series are plain numbers that a collector turns into Prometheus families when ``/metrics`` is
scraped: counting a request is then a dict lookup, a bisect and three additions, where prometheus_client's
``Counter.inc`` and ``Histogram.observe`` take a lock per value and walk the buckets in Python (measured
here: about a tenth of the gateway's own work on a small streamed completion). The exposition is the same.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

# From a cached answer (about a millisecond) to a browser run (tens of seconds).
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_BOUNDS = [*map(floatToGoString, _BUCKETS), "+Inf"]
_REQUESTS = ("harvest_serve_requests", "Requests by route and outcome.")
_DURATION = (
    "harvest_serve_request_duration_seconds",
    "Time to answer a request (to the last byte of a stream), by route and outcome.",
)
_LABELS = ("route", "outcome")


class _Series:
    """One route and outcome: the request count per duration bucket (the last one is +Inf), the sum of the
    durations, and when the series began."""

    __slots__ = ("buckets", "created", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(_BUCKETS) + 1)
        self.total = 0.0
        self.created = time.time()


class _RequestCollector:
    """``harvest_serve_requests`` (a counter) and ``harvest_serve_request_duration_seconds`` (a histogram)."""

    def __init__(self, series: dict[tuple[str, str], _Series]) -> None:
        self._series = series

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(*_REQUESTS, labels=_LABELS), HistogramMetricFamily(*_DURATION, labels=_LABELS)]

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(*_REQUESTS, labels=_LABELS)
        duration = HistogramMetricFamily(*_DURATION, labels=_LABELS)
        for (route, outcome), series in list(self._series.items()):
            counts = list(series.buckets)  # one copy: the buckets and the count agree even mid-request
            count = sum(counts)
            requests.add_metric([route, outcome], count, created=series.created)
            cumulative, buckets = 0, []
            for bound, n in zip(_BOUNDS, counts, strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            duration.add_metric([route, outcome], buckets, series.total)
            duration.samples.append(
                Sample(f"{_DURATION[0]}_created", {"route": route, "outcome": outcome}, series.created)
            )
        yield requests
        yield duration


class ServeMetrics:
    """A counter and a histogram per route and outcome, and a counter of browser runs per outcome."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        # Written only by the server's event loop thread; a scrape reads a copy of the items.
        self._series: dict[tuple[str, str], _Series] = {}
        self.registry.register(_RequestCollector(self._series))
        self.browser_runs = Counter(
            "harvest_serve_browser_runs",
            "Browser runs started by the server, by outcome.",
            ["outcome"],
            registry=self.registry,
        )

    def observe(self, route: str, outcome: str, seconds: float) -> None:
        """Count one request and its duration."""
        key = (route, outcome)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series()
        series.buckets[bisect_left(_BUCKETS, seconds)] += 1  # the first bound >= seconds: Prometheus' "le"
        series.total += seconds

    def exposition(self) -> bytes:
        """The metrics in Prometheus text format."""
        return generate_latest(self.registry)
