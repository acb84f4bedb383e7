"""A worker's live state: entry points, route tables, services and backend pools.

Snapshots from the master replace the route tables and services wholesale;
requests already in flight keep the objects they started with. Backend
pools are keyed by address and outlive snapshots, so a reload that keeps a
server keeps its warm keep-alive connections.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from portside.master.static_config import EntryPoint, StaticConfig
from portside.worker.access_log import AccessLog, open_access_log
from portside.worker.balancer import Balancer, Server
from portside.worker.headers import ForwardedBy
from portside.worker.internal import InternalServices, StatusPages
from portside.worker.routing import Route, RouteTable
from portside.worker.rules import Rule, parse_rule
from portside.worker.stats import WorkerStats
from portside.worker.upstream import Dials, UpstreamPool

if TYPE_CHECKING:
    from portside.worker.accepting import Acceptor

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


#: Resends when nothing is configured: one per other server, at most this many.
DEFAULT_RESENDS: Final = 3


@dataclass(frozen=True, slots=True)
class PassiveHealth:
    """When a server is ejected (loadBalancer.passiveHealthCheck)."""

    max_failed_attempts: int = 3
    failure_window: float = 10.0


class Service:
    """A named group of servers with its balancer."""

    __slots__ = ("name", "balancer", "passive", "retry")

    def __init__(
        self, name: str, balancer: Balancer, passive: PassiveHealth, retry: dict | None
    ) -> None:
        self.name = name
        self.balancer = balancer
        self.passive = passive
        self.retry = retry  # the service's own retry settings, if any


def _retry_policy(retry: dict | None, service: Service) -> tuple[int, float]:
    """(total attempts, initial interval) for a router: its retry middleware, else
    the service's retry settings, else one resend per other server (at most 3)."""
    if retry is None or retry.get("attempts") is None:
        others = len(service.balancer.servers) - 1
        attempts = 1 + max(0, min(others, DEFAULT_RESENDS))
    else:
        attempts = retry["attempts"]
    if retry is not None and retry.get("disabled"):
        attempts = 1
    return max(1, attempts), float((retry or {}).get("initialInterval", 0.0))


class EntryPointRuntime:
    """One entry point in this worker: its routes and per-connection settings."""

    __slots__ = (
        "name",
        "port",
        "idle_timeout",
        "limits",
        "max_uri",
        "max_head",
        "max_body",
        "max_field_items",
        "open",
        "acceptor",
        "table",
        "internal",
        "_hostname",
        "_trusted",
        "_forwarded",
    )

    def __init__(self, ep: EntryPoint, hostname: str) -> None:
        self.name = ep.name
        self.port = ep.port
        self.idle_timeout = ep.idle_timeout
        self.limits = ep.limits
        # Those checked on the request path, as plain attributes.
        self.max_uri = ep.limits.max_uri_bytes
        self.max_head = ep.limits.max_header_bytes
        self.max_body = ep.limits.max_body_bytes
        # Fields are kept as a flat list of four items each (name, ": ", value, CRLF),
        # without Host, which every HTTP/1.1 request has and which is kept apart.
        self.max_field_items = 4 * (ep.limits.max_header_fields - 1)
        #: Client connections open on this entry point in this worker.
        self.open = 0
        #: Set once the worker serves; connections exist only from then on.
        self.acceptor: Acceptor | None = None
        self.table = RouteTable(())
        #: The API, ping, metrics and dashboard, on the entry points that serve them.
        self.internal: InternalServices | None = None
        self._hostname = hostname
        self._trusted: list[_Network] = [
            ipaddress.ip_network(t, strict=False) for t in ep.trusted_ips
        ]
        self._forwarded: dict[str, ForwardedBy] = {}

    def forwarded_by(self, ip: str) -> ForwardedBy:
        """The forwarded fields for a client at `ip`, made once per IP."""
        by = self._forwarded.get(ip)
        if by is None:
            # About 0.5 KB each, and up to a few KB more with the last request's
            # fields: a proxy reached from many addresses starts over rather
            # than keep them all.
            if len(self._forwarded) >= 1024:
                self._forwarded.clear()
            by = ForwardedBy(ip, "http", self.port, self._hostname, self._is_trusted(ip))
            self._forwarded[ip] = by
        return by

    def _is_trusted(self, ip: str) -> bool:
        """Whether X-Forwarded-* headers from this peer are kept (forwardedHeaders.trustedIPs)."""
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(addr in net for net in self._trusted)


class WorkerRuntime:
    """Everything one worker process serves with."""

    def __init__(self, config: StaticConfig, counters: memoryview) -> None:
        self.loop = asyncio.get_running_loop()
        self.hostname = socket.gethostname()
        self.config = config
        transport = config.servers_transport
        self.response_header_timeout = transport.response_header_timeout
        self.replay_limit = transport.replay_buffer_size
        self.entry_points = {
            name: EntryPointRuntime(ep, self.hostname) for name, ep in config.entry_points.items()
        }
        self.connections: set[Any] = set()
        self.access_log: AccessLog | None = open_access_log(config.observability.access_log)
        self.stats = WorkerStats(self.access_log)
        #: The master's latest status, which the internal services serve.
        self.status = StatusPages()
        for name, ep in self.entry_points.items():
            ep.internal = InternalServices.for_entry_point(self, name)
        self.services: dict[str, Service] = {}
        self.generation = 0
        #: Set when a graceful stop begins (/ping answers 503 from then on).
        self.shutting_down = False
        self._counters = counters
        self._pools: dict[tuple[str, int], UpstreamPool] = {}
        #: Connects in flight in every pool, retired ones' included.
        self._dials = Dials(transport.dial_timeout)
        #: The current routers' rules, parsed: kept from one snapshot to the next.
        self._rules: dict[str, Rule] = {}

    def apply_snapshot(self, snapshot: dict[str, Any]) -> None:
        """Replace routes and services with those of a snapshot from the master."""
        transport = self.config.servers_transport
        services: dict[str, Service] = {}
        wanted_pools: dict[tuple[str, int], UpstreamPool] = {}
        for name, spec in snapshot["services"].items():
            servers = []
            for s in spec["servers"]:
                key = (s["host"], s["port"])
                pool = self._pools.get(key) or UpstreamPool(
                    s["host"], s["port"], transport.max_idle_conns_per_host, self._dials
                )
                wanted_pools[key] = pool
                servers.append(Server(s["url"], s["weight"], pool, s.get("healthy", True)))
            passive = spec.get("passiveHealthCheck") or {}
            services[name] = Service(
                name,
                Balancer(servers, self._counters, spec["slot"]),
                PassiveHealth(
                    passive.get("maxFailedAttempts", 3), passive.get("failureWindow", 10.0)
                ),
                spec.get("retry"),
            )
        for key, pool in self._pools.items():
            if key not in wanted_pools:
                pool.close()
        self._pools = wanted_pools

        routes: dict[str, list[Route]] = {name: [] for name in self.entry_points}
        # A rule is parsed once and reused while routers have it: an update (one
        # container starting) then costs each worker the new rules, not the whole
        # table again (about 15 ms per 1,000 rules, while the worker serves nobody).
        rules: dict[str, Rule] = {}
        for r in snapshot["routers"]:
            text = r["rule"]
            rule = rules.get(text) or self._rules.get(text) or parse_rule(text)
            rules[text] = rule
            for ep in r["entryPoints"]:
                if ep in routes:
                    service = services[r["service"]]
                    attempts, interval = _retry_policy(r.get("retry") or service.retry, service)
                    routes[ep].append(
                        Route(r["name"], rule, r["priority"], service, attempts, interval)
                    )
        self._rules = rules
        for name, ep in self.entry_points.items():
            ep.table = RouteTable(routes[name])
        self.services = services
        self.generation = snapshot["generation"]

    def sweep(self) -> None:
        """Enforce the client connections' timeouts and the dial timeout; close idle
        backend connections."""
        now = self.loop.time()
        for conn in list(self.connections):
            conn.sweep(now)
        idle_timeout = self.config.servers_transport.idle_conn_timeout
        for pool in self._pools.values():
            pool.sweep(now, idle_timeout)
        self._dials.expire(now)
        if self.access_log is not None:
            self.access_log.flush()

    def health_report(self) -> dict[str, Any]:
        """For the master's status: open connections per entry point, and the servers
        this worker's passive health checks have ejected."""
        open_connections = {name: ep.open for name, ep in self.entry_points.items()}
        ejected = [
            [service.name, server.url]
            for service in self.services.values()
            for server in service.balancer.servers
            if server.pool.ejected
        ]
        return {"open": open_connections, "ejected": ejected}

    def reopen_access_log(self) -> None:
        """SIGUSR1: write the access log to a new file of the same name (logrotate)."""
        if self.access_log is not None:
            self.access_log.reopen()

    def close(self) -> None:
        """At exit: write out what the access log still holds."""
        if self.access_log is not None:
            self.access_log.close()
