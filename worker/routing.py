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
from typing import TYPE_CHECKING

from portside.worker.rules import RequestView, Rule

if TYPE_CHECKING:
    # Typed, not Any: compiled code then reads route.service.balancer directly.
    from portside.worker.runtime import Service


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

    __slots__ = ("_by_host", "_any_host")

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

    def lookup(self, request: RequestView) -> Route | None:
        """The highest-priority route matching the request, or None."""
        for route in self._by_host.get(request.host, self._any_host):
            if route.match is None or route.match(request):
                return route
        return None
