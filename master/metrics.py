"""Prometheus exposition of the master's totals, with prometheus_client.

A fresh registry with one custom collector is rendered once a second from
the aggregated data: the workers count with plain integers, and no
prometheus_client metric object ever sits on a hot path.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from portside.master.stats import Totals
from portside.worker.stats import DURATION_BUCKETS

if TYPE_CHECKING:
    from portside.master.children import Child
    from portside.master.status import ConfigHistory


class _Collector:
    """Yields the metric families of one status, for one generate_latest() call."""

    def __init__(
        self,
        totals: Totals,
        services: Sequence[dict[str, Any]],
        workers: Sequence[Child],
        generation: int,
        history: ConfigHistory,
    ) -> None:
        self.totals = totals
        self.services = services
        self.workers = workers
        self.generation = generation
        self.history = history

    def collect(self) -> Iterator[Metric]:
        yield from self._traffic()
        yield from self._servers()
        yield from self._process()

    def _traffic(self) -> Iterator[Metric]:
        totals = self.totals
        requests = CounterMetricFamily(
            "portside_requests_total",
            "Requests answered, by entry point, router, service, status code and method.",
            labels=["entrypoint", "router", "service", "code", "method"],
        )
        for (ep, router, service, status, method), n in sorted(totals.requests.items()):
            requests.add_metric([ep, router, service, str(status), method], n)
        yield requests
        durations = HistogramMetricFamily(
            "portside_request_duration_seconds",
            "Time from a request's head to the end of its response, by service.",
            labels=["service"],
        )
        for service, duration in sorted(totals.durations.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(
                (*DURATION_BUCKETS, float("inf")), duration.buckets, strict=True
            ):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
            durations.add_metric([service], buckets, duration.total)
        yield durations
        retries = CounterMetricFamily(
            "portside_retries_total", "Requests resent to another server.", labels=["service"]
        )
        for service, n in sorted(totals.retries.items()):
            retries.add_metric([service], n)
        yield retries
        errors = CounterMetricFamily(
            "portside_upstream_errors_total",
            "Failed exchanges with a backend, by kind: connect, reset, timeout, invalid.",
            labels=["service", "kind"],
        )
        for (service, kind), n in sorted(totals.upstream_errors.items()):
            errors.add_metric([service, kind], n)
        yield errors

    def _servers(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "portside_server_up",
            "1 if the server takes new requests; 0 if draining, ejected or unhealthy.",
            labels=["service", "url"],
        )
        for service in self.services:
            for server in service["loadBalancer"]["servers"]:
                up.add_metric([service["name"], server["url"]], 1 if server["state"] == "up" else 0)
        yield up

    def _process(self) -> Iterator[Metric]:
        current = [c for c in self.workers if not c.superseded]
        open_connections = GaugeMetricFamily(
            "portside_open_connections", "Open client connections.", labels=["entrypoint"]
        )
        per_entry_point: dict[str, int] = {}
        for child in self.workers:
            for name, n in child.open_connections.items():
                per_entry_point[name] = per_entry_point.get(name, 0) + n
        for name, n in sorted(per_entry_point.items()):
            open_connections.add_metric([name], n)
        yield open_connections
        memory = GaugeMetricFamily(
            "portside_worker_resident_memory_bytes",
            "Resident memory of each worker.",
            labels=["slot"],
        )
        for child in {c.slot: c for c in current}.values():
            memory.add_metric([str(child.slot)], child.rss)
        yield memory
        yield CounterMetricFamily(
            "portside_config_reloads_total",
            "Reloads of the static configuration (HUP) that were applied.",
            value=self.history.reloads,
        )
        yield GaugeMetricFamily(
            "portside_config_last_reload_success",
            "When the configuration was last loaded successfully (Unix time; the start counts).",
            value=self.history.last_success,
        )
        yield GaugeMetricFamily(
            "portside_config_generation",
            "The generation of the routing configuration the workers serve.",
            value=self.generation,
        )


def render_metrics(
    totals: Totals,
    services: Sequence[dict[str, Any]],
    workers: Sequence[Child],
    generation: int,
    history: ConfigHistory,
) -> str:
    """The Prometheus text exposition of the current totals and states."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(totals, services, workers, generation, history))
    return generate_latest(registry).decode()
