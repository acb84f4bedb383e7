"""Tests for portside.worker.routing: the route table picks what a linear scan would."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_rules import Request

from portside.worker.balancer import Balancer
from portside.worker.routing import _HOST_CACHE, HOST_CACHE_MAX, Route, RouteTable
from portside.worker.rules import parse_rule
from portside.worker.runtime import PassiveHealth, Service

# Routing never looks at the service; a route still needs a real one, since
# compiled code checks the type of Route.service.
_COUNTERS = memoryview(bytearray(8)).cast("Q")
SERVICE = Service("s", Balancer([], _COUNTERS, 0), PassiveHealth(), None)

HOSTS = ("a.test", "b.test", "c.test")
# Rules of each shape the table indexes differently: one host, several hosts,
# a host plus a predicate, and rules that can match any host.
RULES = (
    "Host(`a.test`)",
    "Host(`b.test`)",
    "Host(`a.test`, `c.test`)",
    "Host(`b.test`) && Path(`/x`)",
    "Host(`a.test`) || Host(`b.test`) && Method(`POST`)",
    "PathPrefix(`/`)",
    "Path(`/x`)",
    "Method(`POST`)",
)


def scan(routes: list[Route], request: Request) -> Route | None:
    """The reference: every router in priority order (ties by name), first match wins."""
    for route in sorted(routes, key=lambda r: (-r.priority, r.name)):
        host_ok = route.hosts is None or request.host in route.hosts
        if host_ok and (route.match is None or route.match(request)):
            return route
    return None


tables = st.lists(
    st.tuples(st.sampled_from(RULES), st.integers(min_value=0, max_value=3)),
    max_size=12,
)
requests = st.builds(
    Request,
    host=st.sampled_from((*HOSTS, "unknown.test")),
    path=st.sampled_from(("/", "/x")),
    method=st.sampled_from(("GET", "POST")),
)


@settings(max_examples=300, deadline=None)
@given(table=tables, request=requests)
def test_lookup_matches_a_linear_scan(table: list[tuple[str, int]], request: Request) -> None:
    routes = [Route(f"r{i}", parse_rule(r), p, SERVICE) for i, (r, p) in enumerate(table)]
    assert RouteTable(routes).lookup(request.host.encode(), request) is scan(routes, request)


def test_a_large_table_keeps_host_and_any_host_routers_in_order() -> None:
    # 2,000 single-host routers and two catch-alls, one above and one below them.
    routes = [
        Route(f"h{i:04d}", parse_rule(f"Host(`h{i}.test`)"), 10, SERVICE) for i in range(2000)
    ]
    above = Route("above", parse_rule("Path(`/admin`)"), 20, SERVICE)
    below = Route("below", parse_rule("PathPrefix(`/`)"), 1, SERVICE)
    table = RouteTable([*routes, above, below])
    assert table.lookup(b"h1999.test", Request(host="h1999.test", path="/")) is routes[1999]
    assert table.lookup(b"h1999.test", Request(host="h1999.test", path="/admin")) is above
    assert table.lookup(b"nowhere.test", Request(host="nowhere.test", path="/")) is below


def test_host_header_bytes_are_normalized_before_the_lookup() -> None:
    # The table is keyed by the Host header's bytes as sent; each spelling of a
    # host (case, port, IPv6 brackets) routes as the host it names.
    a = Route("a", parse_rule("Host(`a.test`)"), 1, SERVICE)
    v6 = Route("v6", parse_rule("Host(`::1`)"), 1, SERVICE)
    table = RouteTable([a, v6])
    for raw in (b"a.test", b"A.Test", b"a.test:8080", b" a.test "):
        assert table.lookup(raw, Request(host="a.test", path="/")) is a, raw
    assert table.lookup(b"[::1]:80", Request(host="::1", path="/")) is v6
    assert table.lookup(b"b.test", Request(host="b.test", path="/")) is None


def test_many_made_up_hosts_leave_lookups_correct() -> None:
    # More distinct Host values than the tables cache: the caches are cleared
    # when full (memory stays bounded) and lookups still answer right.
    a = Route("a", parse_rule("Host(`a.test`)"), 1, SERVICE)
    table = RouteTable([a])
    request = Request(host="x", path="/")
    for i in range(HOST_CACHE_MAX + 10):
        assert table.lookup(b"h%d.test" % i, request) is None
        assert table.lookup(b"a.test", request) is a
    assert len(table._by_raw_host) <= HOST_CACHE_MAX
    assert len(_HOST_CACHE) <= HOST_CACHE_MAX
