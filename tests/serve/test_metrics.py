"""The server's request metrics against prometheus_client's own Counter and Histogram."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from harvester.serve import ServeMetrics
from harvester.serve._metrics import _BUCKETS


def _without_created(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if "_created" not in line]


def test_request_series_read_as_prometheus_clients_counter_and_histogram() -> None:
    """The same observations (bucket bounds included) give the exposition a prometheus_client Counter and
    Histogram give, so dashboards and alerts read the same series."""
    observations = [
        ("/v1", "200", 0.0004),
        ("/v1", "200", 0.001),  # on a bound: counted in le="0.001"
        ("/v1", "200", 0.0011),
        ("/v1", "500", 7.5),
        ("/v1/chat/completions", "200", 0.004),
        ("/v1/chat/completions", "499", 200.0),  # past the last bound: only in +Inf
    ]
    ours = ServeMetrics()
    reference = CollectorRegistry(auto_describe=True)
    requests = Counter(
        "harvest_serve_requests", "Requests by route and outcome.", ["route", "outcome"], registry=reference
    )
    duration = Histogram(
        "harvest_serve_request_duration_seconds",
        "Time to answer a request (to the last byte of a stream), by route and outcome.",
        ["route", "outcome"],
        buckets=_BUCKETS,
        registry=reference,
    )
    Counter(
        "harvest_serve_browser_runs", "Browser runs started by the server, by outcome.", ["outcome"], registry=reference
    )
    for route, outcome, seconds in observations:
        ours.observe(route, outcome, seconds)
        requests.labels(route, outcome).inc()
        duration.labels(route, outcome).observe(seconds)
    assert _without_created(ours.exposition()) == _without_created(generate_latest(reference))
    created = [line for line in ours.exposition().decode().splitlines() if line.startswith("harvest_serve_request")]
    assert sum("_created{" in line for line in created) == 2 * 4  # a start time per series, as before
