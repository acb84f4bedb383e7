"""The status the master pushes to the workers: the API documents and the metrics text.

The master holds every piece of it: the snapshot (routers, services), the
server states (active health from discovery, draining from the Docker
provider, passive-health ejections from each worker), the worker table
(/proc samples and heartbeats) and the summed counters. Rendering it here,
once, means every worker serves the same answer whichever one a client
reaches, and workers never import or run the exposition code.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from portside.master import VERSION
from portside.master.children import Child
from portside.master.static_config import StaticConfig
from portside.master.stats import Totals

UP, DRAINING, EJECTED, UNHEALTHY = "up", "draining", "ejected", "unhealthy"


@dataclass
class ConfigHistory:
    """Reloads of the static configuration (HUP), for the metrics."""

    reloads: int = 0
    last_success: float = field(default_factory=time.time)  # the start counts as one

    def succeeded(self) -> None:
        self.reloads += 1
        self.last_success = time.time()


@dataclass
class StatusInputs:
    """Everything the status is made of, as the master holds it."""

    config: StaticConfig
    snapshot: dict[str, Any] | None
    workers: Iterable[Child]
    totals: Totals
    #: (qualified service, url) pairs a provider is draining (the snapshot no longer has them).
    draining: Collection[tuple[str, str]]
    providers: Collection[str]
    history: ConfigHistory
    started: float  # wall clock


def build_status(inputs: StatusInputs) -> dict[str, Any]:
    """The `status` message: {"type": "status", "api": {...}, "metrics": text}."""
    workers = sorted(inputs.workers, key=lambda c: (c.slot, c.generation, c.pid))
    snapshot = inputs.snapshot or {"generation": 0, "routers": [], "services": {}}
    ejected = {tuple(pair) for child in workers for pair in child.ejected}
    services = _services(snapshot, inputs, ejected)
    routers = sorted((_router(r) for r in snapshot["routers"]), key=lambda r: r["name"])
    worker_rows = [_worker(child) for child in workers]
    api = {
        "overview": _overview(inputs, routers, services, worker_rows),
        "entrypoints": _entry_points(inputs.config),
        "routers": routers,
        "services": services,
        "workers": worker_rows,
        "version": {
            "Version": VERSION,
            "Codename": "portside",
            "startDate": datetime.fromtimestamp(inputs.started, UTC).isoformat(),
        },
    }
    metrics = ""
    if inputs.config.observability.metrics_entry_point:
        # Imported here, not at the top: prometheus_client brings http.server, email and
        # urllib (about 2 MB), which every worker forked afterwards would carry too.
        from portside.master.metrics import render_metrics

        metrics = render_metrics(
            inputs.totals, services, workers, snapshot["generation"], inputs.history
        )
    return {"type": "status", "api": api, "metrics": metrics}


def _provider(name: str) -> str:
    return name.rpartition("@")[2]


def _router(router: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": router["name"],
        "rule": router["rule"],
        "service": router["service"],
        "entryPoints": router["entryPoints"],
        "priority": router["priority"],
        "provider": _provider(router["name"]),
        "status": "enabled",
    }


def _services(
    snapshot: dict[str, Any], inputs: StatusInputs, ejected: set[tuple[str, ...]]
) -> list[dict[str, Any]]:
    totals = inputs.totals.per_service()
    used_by: dict[str, list[str]] = {}
    for router in snapshot["routers"]:
        used_by.setdefault(router["service"], []).append(router["name"])
    draining: dict[str, list[str]] = {}
    for service, url in sorted(inputs.draining):
        draining.setdefault(service, []).append(url)
    result = []
    for name, spec in sorted(snapshot["services"].items()):
        servers = [
            {"url": s["url"], "weight": s["weight"], "state": _state(name, s, ejected)}
            for s in spec["servers"]
        ]
        in_rotation = {s["url"] for s in servers}
        servers += [
            {"url": url, "weight": 0, "state": DRAINING}
            for url in draining.get(name, ())
            if url not in in_rotation
        ]
        requests, errors = totals.get(name, (0, 0))
        result.append(
            {
                "name": name,
                "provider": _provider(name),
                "type": "loadbalancer",
                "status": "enabled" if any(s["state"] == UP for s in servers) else "disabled",
                "usedBy": sorted(used_by.get(name, [])),
                "loadBalancer": {"servers": servers, "passHostHeader": True},
                "serverStatus": {s["url"]: s["state"] for s in servers},
                "requests": requests,
                "serverErrors": errors,
            }
        )
    return result


def _state(service: str, server: dict[str, Any], ejected: set[tuple[str, ...]]) -> str:
    if not server.get("healthy", True):
        return UNHEALTHY
    if (service, server["url"]) in ejected:
        return EJECTED
    return UP


def _worker(child: Child) -> dict[str, Any]:
    if child.superseded or child.drain_deadline is not None:
        state = "draining"
    else:
        state = "serving" if child.serving else "starting"
    return {
        "pid": child.pid,
        "slot": child.slot,
        "generation": child.generation,
        "state": state,
        "rss": child.rss,
        "cpuPercent": round(child.cpu_percent, 1),
        "connections": child.connections,
        "openConnections": child.open_connections,
        "snapshotAcked": child.snapshot_acked,
    }


def _entry_points(config: StaticConfig) -> list[dict[str, Any]]:
    observability = config.observability
    rows = []
    for name, ep in config.entry_points.items():
        host = f"[{ep.host}]" if ":" in ep.host else ep.host
        services = observability.services_on(name)
        rows.append(
            {
                "name": name,
                "address": f"{host}:{ep.port}",
                "internal": [s for s, on in services.items() if on],
                "implicit": name == observability.implicit_entry_point,
                "transport": {
                    "respondingTimeouts": {"idleTimeout": ep.idle_timeout},
                    "lifeCycle": {
                        "requestAcceptGraceTimeout": ep.accept_grace,
                        "graceTimeOut": ep.grace_timeout,
                    },
                },
                "forwardedHeaders": {"trustedIPs": list(ep.trusted_ips)},
            }
        )
    return rows


def _overview(
    inputs: StatusInputs,
    routers: list[dict[str, Any]],
    services: list[dict[str, Any]],
    workers: list[dict[str, Any]],
) -> dict[str, Any]:
    degraded = [s for s in services if any(x["state"] != UP for x in s["loadBalancer"]["servers"])]
    down = [s for s in services if s["status"] != "enabled"]
    observability = inputs.config.observability
    return {
        "http": {
            "routers": {"total": len(routers), "warnings": 0, "errors": 0},
            "services": {"total": len(services), "warnings": len(degraded), "errors": len(down)},
        },
        "features": {
            "accessLog": observability.access_log is not None,
            "metrics": "prometheus" if observability.metrics_entry_point else "",
            "dashboard": bool(observability.api and observability.api.dashboard),
        },
        "providers": sorted(inputs.providers),
        "generation": (inputs.snapshot or {}).get("generation", 0),
        "workers": len([w for w in workers if w["state"] != "draining"]),
    }
