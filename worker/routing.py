"""Route tables: which router serves a request on one entry point.

Routers are tried in priority order (highest first; Traefik's default
priority is the rule's length, so longer, more specific rules win). To keep
the common case O(1), routers whose rule pins the host to a fixed set are
indexed by host name: a request only walks the routers for its own host,
merged with the routers that can match any host.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from heapq import merge
from typing import TYPE_CHECKING, Final

from portside.worker.rules import RequestView, Rule

if TYPE_CHECKING:
    # Typed, not Any: compiled code then reads route.service.balancer directly.
    from portside.worker.runtime import Service


#: Host header bytes -> routing key, shared by every table: a client sends the
#: same few Host values again and again. Cleared when full, so that clients
#: sending made-up hosts cannot make it grow without bound.
_HOST_CACHE: Final[dict[bytes, str]] = {}
#: The most Host values either cache keeps (this one, and each table's own).
HOST_CACHE_MAX: Final = 4096


def normalize_host(raw: bytes) -> str:
    """Host header to the routing key: lower-case, port and IPv6 brackets removed."""
    host = _HOST_CACHE.get(raw)
    if host is None:
        text = raw.decode("latin-1").strip().lower()
        if text.startswith("["):
            end = text.find("]")
            host = text[1:end] if end > 0 else text
        else:
            host = text.partition(":")[0]
        if len(_HOST_CACHE) >= HOST_CACHE_MAX:
            _HOST_CACHE.clear()
        _HOST_CACHE[raw] = host
    return host


class Route:
    """One router, compiled: its predicate and the service it sends to."""

    __slots__ = ("name", "priority", "hosts", "match", "service", "attempts", "retry_interval")

    def __init__(
        self,
        name: str,
        rule: Rule,
        priority: int,
        service: Service,
        attempts: int = 1,
        retry_interval: float = 0.0,
    ) -> None:
        self.name = name
        self.priority = priority
        self.hosts = rule.hosts
        #: None when the host lookup alone decides (a rule made only of Host matchers).
        self.match: Callable[[RequestView], bool] | None = rule.match
        self.service = service
        #: Total attempts a request may take (1: never resent), and the delay
        #: before the first resend (doubling after each).
        self.attempts = attempts
        self.retry_interval = retry_interval


class RouteTable:
    """The routers of one entry point, indexed for lookup."""

    __slots__ = ("_by_host", "_any_host", "_by_raw_host")

    def __init__(self, routes: Iterable[Route]) -> None:
        # Ties on priority are broken by name so that every worker, and every
        # reload, orders the same routers the same way.
        ordered = sorted(routes, key=lambda r: (-r.priority, r.name))
        # Each host's routers, then merged by rank with those for any host: time
        # linear in the table (plus hosts x any-host routers), not hosts x routers,
        # which took seconds per update at 10,000 routers. Ranks are unique, so
        # the merge never compares two routes.
        any_host: list[tuple[int, Route]] = []
        per_host: dict[str, list[tuple[int, Route]]] = {}
        for rank, route in enumerate(ordered):
            if route.hosts is None:
                any_host.append((rank, route))
            else:
                for host in route.hosts:
                    per_host.setdefault(host, []).append((rank, route))
        self._any_host = tuple(route for _, route in any_host)
        self._by_host = {
            host: tuple(route for _, route in merge(own, any_host))
            for host, own in per_host.items()
        }
        # The candidates by the Host header's own bytes, filled as requests come:
        # one dict probe per request instead of two (normalizing the Host, then
        # looking it up). With requests spread over 1,000 hosts each probe is a
        # few cache misses, and the second one cost 0.2 µs per request.
        self._by_raw_host: dict[bytes, tuple[Route, ...]] = {}

    def lookup(self, raw_host: bytes, request: RequestView) -> Route | None:
        """The highest-priority route matching the request (Host header `raw_host`), or None."""
        routes = self._by_raw_host.get(raw_host)
        if routes is None:
            routes = self._by_host.get(normalize_host(raw_host), self._any_host)
            if len(self._by_raw_host) >= HOST_CACHE_MAX:
                self._by_raw_host.clear()
            self._by_raw_host[raw_host] = routes
        for route in routes:
            if route.match is None or route.match(request):
                return route
        return None
