"""The master's totals of what every worker counted (see portside.worker.stats)."""

from __future__ import annotations

import logging
from typing import Any

from portside.worker.stats import DURATION_BUCKETS

log = logging.getLogger("portside.master")

RequestKey = tuple[str, str, str, int, str]  # entry point, router, service, status, method


class Duration:
    """One service's request duration histogram: counts per bucket (+Inf last) and sum."""

    __slots__ = ("buckets", "total")

    def __init__(self) -> None:
        self.buckets = [0] * (len(DURATION_BUCKETS) + 1)
        self.total = 0.0


class Totals:
    """Every worker's counters summed: requests, durations, resends and backend errors."""

    def __init__(self) -> None:
        self.requests: dict[RequestKey, int] = {}
        self.durations: dict[str, Duration] = {}
        self.retries: dict[str, int] = {}
        self.upstream_errors: dict[tuple[str, str], int] = {}

    def add(self, message: dict[str, Any]) -> None:
        """Add one worker's report; a malformed report is logged and skipped."""
        try:
            requests = [
                (
                    (str(ep), str(router), str(service), int(status), str(method)),
                    int(bucket),
                    int(n),
                    float(seconds),
                )
                for ep, router, service, status, method, bucket, n, seconds in message.get(
                    "requests", ()
                )
            ]
            retries = [(str(s), int(n)) for s, n in message.get("retries", ())]
            errors = [
                ((str(s), str(kind)), int(n)) for s, kind, n in message.get("upstreamErrors", ())
            ]
        except (TypeError, ValueError) as exc:
            log.error("bad stats report from a worker: %s", exc)
            return
        for key, bucket, n, seconds in requests:
            self.requests[key] = self.requests.get(key, 0) + n
            duration = self.durations.get(key[2])
            if duration is None:
                duration = self.durations[key[2]] = Duration()
            duration.buckets[min(max(bucket, 0), len(DURATION_BUCKETS))] += n
            duration.total += seconds
            if log.isEnabledFor(logging.DEBUG):
                total = self.by_status(key[2], key[3])
                log.debug("stats: %s %d total %d", key[2] or "-", key[3], total)
        for service, n in retries:
            self.retries[service] = self.retries.get(service, 0) + n
            log.debug("stats: %s resends total %d", service, self.retries[service])
        for key, n in errors:
            self.upstream_errors[key] = self.upstream_errors.get(key, 0) + n

    def by_status(self, service: str, status: int) -> int:
        """Requests to a service answered with a status, over every entry point, router, method."""
        return sum(n for key, n in self.requests.items() if key[2] == service and key[3] == status)

    def per_service(self) -> dict[str, tuple[int, int]]:
        """(requests, server errors (5xx)) of each service, for the API and the dashboard."""
        result: dict[str, tuple[int, int]] = {}
        for (_, _, service, status, _), n in self.requests.items():
            total, errors = result.get(service, (0, 0))
            result[service] = (total + n, errors + (n if status >= 500 else 0))
        return result
