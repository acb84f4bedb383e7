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
from typing import Any

from portside.master.static_config import StaticConfig
from portside.worker.balancer import Balancer
from portside.worker.routing import Route, RouteTable
from portside.worker.upstream import UpstreamPool

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Server:
    """One backend of a service, as a worker sees it."""

    __slots__ = ("url", "weight", "pool", "available")

    def __init__(self, url: str, weight: int, pool: UpstreamPool) -> None:
        self.url = url
        self.weight = weight
        self.pool = pool
        self.available = True


class Service:
    """A named group of servers with its balancer."""

    __slots__ = ("name", "balancer")

    def __init__(self, name: str, balancer: Balancer) -> None:
        self.name = name
        self.balancer = balancer


class EntryPointRuntime:
    """One entry point in this worker: its routes and per-connection settings."""

    __slots__ = ("name", "port", "idle_timeout", "table", "_trusted", "_trust_cache")

    def __init__(self, name: str, port: int, idle_timeout: float, trusted: tuple[str, ...]) -> None:
        self.name = name
        self.port = port
        self.idle_timeout = idle_timeout
        self.table = RouteTable(())
        self._trusted: list[_Network] = [ipaddress.ip_network(t, strict=False) for t in trusted]
        self._trust_cache: dict[str, bool] = {}

    def is_trusted(self, ip: str) -> bool:
        """Whether X-Forwarded-* headers from this peer are kept (forwardedHeaders.trustedIPs)."""
        trusted = self._trust_cache.get(ip)
        if trusted is None:
            try:
                addr = ipaddress.ip_address(ip)
            except ValueError:
                trusted = False
            else:
                trusted = any(addr in net for net in self._trusted)
            if len(self._trust_cache) > 4096:
                self._trust_cache.clear()
            self._trust_cache[ip] = trusted
        return trusted


class WorkerRuntime:
    """Everything one worker process serves with."""

    def __init__(self, config: StaticConfig, counters: memoryview) -> None:
        self.loop = asyncio.get_running_loop()
        self.hostname = socket.gethostname()
        self.config = config
        transport = config.servers_transport
        self.response_header_timeout = transport.response_header_timeout
        self.entry_points = {
            name: EntryPointRuntime(name, ep.port, ep.idle_timeout, ep.trusted_ips)
            for name, ep in config.entry_points.items()
        }
        self.connections: set[Any] = set()
        self.generation = 0
        self._counters = counters
        self._pools: dict[tuple[str, int], UpstreamPool] = {}

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
                    s["host"], s["port"], transport.dial_timeout, transport.max_idle_conns_per_host
                )
                wanted_pools[key] = pool
                servers.append(Server(s["url"], s["weight"], pool))
            services[name] = Service(name, Balancer(servers, self._counters, spec["slot"]))
        for key, pool in self._pools.items():
            if key not in wanted_pools:
                pool.close()
        self._pools = wanted_pools

        routes: dict[str, list[Route]] = {name: [] for name in self.entry_points}
        for r in snapshot["routers"]:
            for ep in r["entryPoints"]:
                if ep in routes:
                    routes[ep].append(
                        Route(r["name"], r["rule"], r["priority"], services[r["service"]])
                    )
        for name, ep in self.entry_points.items():
            ep.table = RouteTable(routes[name])
        self.generation = snapshot["generation"]

    def sweep(self) -> None:
        """Close client and backend connections idle past their timeouts."""
        now = self.loop.time()
        for conn in list(self.connections):
            if conn.idle and now - conn.last_active > conn.entry_point.idle_timeout:
                conn.close()
        idle_timeout = self.config.servers_transport.idle_conn_timeout
        for pool in self._pools.values():
            pool.sweep(now, idle_timeout)

    def close_idle(self) -> None:
        """For a graceful stop: close idle connections, and the rest after their request."""
        for conn in list(self.connections):
            conn.closing = True
            if conn.idle:
                conn.close()
