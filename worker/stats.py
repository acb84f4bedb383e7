"""Per-worker counters, reported to the master as deltas once a second.

The hot path only builds a tuple and bumps the counter it keys, per request;
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

#: DURATION_BUCKETS[0], as a constant compiled code compares unboxed (duration_bucket).
_FIRST_BOUND: Final = 0.005
#: Upper bounds, in seconds, of the request duration histogram (Prometheus' defaults).
#: Typed as a tuple of any length, so that mypyc keeps it as one tuple object:
#: as a fixed-length tuple it would be a C struct, boxed anew for every use.
DURATION_BUCKETS: Final[tuple[float, ...]] = (
    _FIRST_BOUND,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
#: The status of a request whose client went away before any response (nginx's).
CLIENT_GONE: Final = 499
#: Methods reported by name; any other is "OTHER", so clients cannot make labels explode.
_METHODS: Final = {
    m.encode(): m
    for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE")
}

#: The clock request durations are measured with.
clock: Final = perf_counter


class RequestCount:
    """Requests counted under one key, and their summed duration.

    A native class, so that mypyc keeps both as unboxed machine numbers: a
    `[count, seconds]` list would allocate a new float (and, past 256, int) per request.
    """

    __slots__ = ("n", "seconds")

    def __init__(self, seconds: float) -> None:
        self.n = 1
        self.seconds = seconds


def duration_bucket(seconds: float) -> int:
    """The index of the first histogram bound `seconds` does not exceed (bisect_left)."""
    # Nearly every proxied request ends within the first bound: one comparison
    # of unboxed floats instead of a call comparing float objects.
    if seconds <= _FIRST_BOUND:
        return 0
    return bisect_left(DURATION_BUCKETS, seconds)


class WorkerStats:
    """Counts since the last report, and the access log each finished request goes to."""

    __slots__ = ("requests", "retries", "upstream_errors", "access_log")

    def __init__(self, access_log: AccessLog | None = None) -> None:
        #: (entry point, route or None, status, method, duration bucket) -> RequestCount;
        #: the runtime objects themselves, named only when reported
        self.requests: dict[tuple, RequestCount] = {}
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
            duration_bucket(duration),
        )
        count = self.requests.get(key)
        if count is None:
            self.requests[key] = RequestCount(duration)
        else:
            count.n += 1
            count.seconds += duration
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
                    count.n,
                    count.seconds,
                ]
                for (ep, route, status, method, bucket), count in self.requests.items()
            ],
            "retries": [[service, n] for service, n in self.retries.items()],
            "upstreamErrors": [[s, kind, n] for (s, kind), n in self.upstream_errors.items()],
        }
        self.requests = {}
        self.retries = {}
        self.upstream_errors = {}
        return message
