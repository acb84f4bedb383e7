"""The start-up summary: what a person reading the log first needs to see.

In order: the version, worker count and providers; the entry points (logged
by the arbiter, also after reloads); where the internal services and the
access log are; the tcp_migrate_req note (portside.master.sockets); and,
as each provider first reports, what it found.
"""

from __future__ import annotations

import logging

from portside.master.dynamic_config import DynamicConfig
from portside.master.static_config import StaticConfig
from portside.master.status import VERSION

log = logging.getLogger("portside.master")


def log_startup(config: StaticConfig) -> None:
    """The first line: version, workers, providers."""
    providers = []
    if config.file_provider is not None:
        provider = config.file_provider
        providers.append(f"file ({provider.filename or provider.directory})")
    if config.docker_provider is not None:
        providers.append(f"docker ({config.docker_provider.endpoint})")
    log.info(
        "portside %s starting: %d workers; providers: %s",
        VERSION,
        config.worker_count,
        ", ".join(providers) or "none",
    )


def log_internal_services(config: StaticConfig) -> None:
    """Where the API, dashboard, ping and metrics answer, and where the access log goes."""
    observability = config.observability
    for name in sorted(observability.entry_points()):
        ep = config.entry_points[name]
        base = f"http://{f'[{ep.host}]' if ':' in ep.host else ep.host}:{ep.port}"
        paths = {"api": "/api/", "dashboard": "/dashboard/", "ping": "/ping", "metrics": "/metrics"}
        served = [base + paths[s] for s, on in observability.services_on(name).items() if on]
        added = (
            f" (added on {ep.host}:{ep.port}: no entry point named {name!r} is configured)"
            if name == observability.implicit_entry_point
            else ""
        )
        log.info("admin entry point %s%s: %s", name, added, ", ".join(served))
    access_log = observability.access_log
    if access_log is not None:
        log.info("access log (%s): %s", access_log.format, access_log.file_path or "stdout")


def log_provider_found(provider: str, config: DynamicConfig) -> None:
    """A provider's first report."""
    servers = sum(len(s.servers) for s in config.services.values())
    log.info(
        "provider %s found %d routers, %d services, %d servers",
        provider,
        len(config.routers),
        len(config.services),
        servers,
    )
