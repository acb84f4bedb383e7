"""Per-worker counters, reported to the master as deltas once a second.

The hot path only builds a tuple and bumps a plain dict entry per request;
the master adds every worker's deltas up, so its totals are exact across
workers and survive a worker's restart. Method bytes and labels are turned
into text once per report, not once per request.
"""

from __future__ import annotations

from bisect import bisect_left
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from portside.worker.access_log import AccessLog
    from portside.worker.exchange import Exchange

#: Upper bounds, in seconds, of the request duration histogram (Prometheus' defaults).
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The status of a request whose client went away before any response (nginx's).
CLIENT_GONE: Final = 499
#: Methods reported by name; any other is "OTHER", so clients cannot make labels explode.
_METHODS: Final = {
    m.encode(): m
    for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
}

#: The clock request durations are measured with.
clock: Final = perf_counter


class WorkerStats:
    """Counts since the last report, and the access log each finished request goes to."""

    __slots__ = ("requests", "retries", "upstream_errors", "access_log")

    def __init__(self, access_log: AccessLog | None = None) -> None:
        #: (entry point, route or None, status, method, duration bucket) -> [count, seconds];
        #: the runtime objects themselves, named only when reported
        self.requests: dict[tuple, list] = {}
        #: service -> requests resent to another server
        self.retries: dict[str, int] = {}
        #: (service, kind) -> failed backend exchanges; kind: connect, reset, timeout, invalid
        self.upstream_errors: dict[tuple[str, str], int] = {}
        self.access_log = access_log

    def record(self, exchange: Exchange) -> None:
        """Count a finished request (or one its client gave up on), and log it."""
        duration = clock() - exchange.started
        key = (
            exchange.client.entry_point,
            exchange.route,
            exchange.status or CLIENT_GONE,
            exchange.raw_method,
            bisect_left(DURATION_BUCKETS, duration),
        )
        entry = self.requests.get(key)
        if entry is None:
            self.requests[key] = [1, duration]
        else:
            entry[0] += 1
            entry[1] += duration
        if self.access_log is not None:
            self.access_log.log(exchange, duration)

    def take(self) -> dict[str, Any] | None:
        """The report message for what was counted since the last one, and reset."""
        if not self.requests and not self.retries and not self.upstream_errors:
            return None
        message = {
            "type": "stats",
            "requests": [
                [
                    ep.name,
                    route.name if route is not None else "",
                    route.service.name if route is not None else "",
                    status,
                    _METHODS.get(method, "OTHER"),
                    bucket,
                    n,
                    seconds,
                ]
                for (ep, route, status, method, bucket), (n, seconds) in self.requests.items()
            ],
            "retries": [[service, n] for service, n in self.retries.items()],
            "upstreamErrors": [[s, kind, n] for (s, kind), n in self.upstream_errors.items()],
        }
        self.requests = {}
        self.retries = {}
        self.upstream_errors = {}
        return message
