"""Prometheus metrics of the server, in a registry of its own (never the process-global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

# From a cached answer (about a millisecond) to a browser run (tens of seconds).
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class ServeMetrics:
    """A counter and a histogram per route and outcome, and a counter of browser runs per outcome."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "harvest_serve_requests", "Requests by route and outcome.", ["route", "outcome"], registry=self.registry
        )
        self.duration = Histogram(
            "harvest_serve_request_duration_seconds",
            "Time to answer a request (to the last byte of a stream), by route and outcome.",
            ["route", "outcome"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.browser_runs = Counter(
            "harvest_serve_browser_runs",
            "Browser runs started by the server, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        # The labelled children, looked up once: ``labels()`` costs more than the increment itself.
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def observe(self, route: str, outcome: str, seconds: float) -> None:
        """Count one request and its duration."""
        key = (route, outcome)
        pair = self._children.get(key)
        if pair is None:
            pair = self._children[key] = (self.requests.labels(route, outcome), self.duration.labels(route, outcome))
        pair[0].inc()
        pair[1].observe(seconds)

    def exposition(self) -> bytes:
        """The metrics in Prometheus text format."""
        return generate_latest(self.registry)
