"""Merge every provider's dynamic configuration into one snapshot for the workers.

Names are qualified with their provider, as Traefik does (`whoami@file`,
`whoami@docker`), so providers can never clash. A router whose service,
middlewares or entry points do not exist is left out and the reason logged;
the rest of the configuration still applies, so one bad label cannot take
other routes down.

The snapshot, a JSON-ready dict::

    {"generation": int,
     "services": {"whoami@file": {
         "slot": int,                       # its counter slot in shared memory
         "servers": [{"url", "host", "port", "weight", "healthy": bool}],
         "retry": {"attempts": int | None, "initialInterval": float} | None,
         "passiveHealthCheck": {"maxFailedAttempts": int, "failureWindow": float}}},
     "routers": [{"name", "rule", "service", "entryPoints", "priority",
                  "retry": {"attempts": int, "initialInterval": float} | None}]}

A service's `retry` is None for the default (one resend per other server, at
most 3); `attempts` None keeps the default count, 0 turns resending off. A
router's `retry` comes from its first retry middleware and, being the more
specific, overrides its service's.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from portside.master.dynamic_config import (
    DynamicConfig,
    MiddlewareConf,
    RetryConf,
    RouterConf,
    ServiceConf,
)
from portside.master.shared_counters import SlotAllocator
from portside.worker.rules import default_priority

log = logging.getLogger("portside.master")


@dataclass
class SnapshotBuilder:
    """Builds numbered snapshots; owns the generation counter and the counter slots."""

    entry_points: list[str]
    slots: SlotAllocator
    generation: int = 0
    problems: list[str] = field(default_factory=list)

    def build(
        self, configs: dict[str, DynamicConfig], unhealthy: Collection[tuple[str, str]] = ()
    ) -> dict[str, Any]:
        """Return the next snapshot (a JSON-ready dict) for the given provider configs.

        `unhealthy` holds (qualified service, server url) pairs that the active
        health checks took out of rotation.
        """
        self.generation += 1
        self.problems = []
        down = set(unhealthy)
        services: dict[str, dict[str, Any]] = {}
        middlewares: dict[str, MiddlewareConf] = {}
        for provider, config in sorted(configs.items()):
            for name, svc in config.services.items():
                qualified = f"{name}@{provider}"
                services[qualified] = _service(qualified, svc, down)
            for name, middleware in config.middlewares.items():
                middlewares[f"{name}@{provider}"] = middleware
        for name, slot in self.slots.assign(set(services)).items():
            services[name]["slot"] = slot

        routers = []
        for provider, config in sorted(configs.items()):
            for name, router in config.routers.items():
                entry = self._router(f"{name}@{provider}", router, provider, services, middlewares)
                if entry is not None:
                    routers.append(entry)
        return {"generation": self.generation, "routers": routers, "services": services}

    def _router(
        self,
        qualified: str,
        router: RouterConf,
        provider: str,
        services: dict[str, Any],
        middlewares: dict[str, MiddlewareConf],
    ) -> dict[str, Any] | None:
        service = _qualify(router.service, provider)
        if service not in services:
            self._problem(f"router {qualified}: unknown service {service!r}")
            return None
        retry = None
        for reference in router.middlewares:
            middleware = middlewares.get(_qualify(reference, provider))
            if middleware is None:
                self._problem(
                    f"router {qualified}: unknown middleware {_qualify(reference, provider)!r}"
                )
                return None
            if retry is None and middleware.retry is not None:
                retry = {
                    "attempts": middleware.retry.attempts,
                    "initialInterval": middleware.retry.initial_interval,
                }
        entry_points = self._entry_points(qualified, router.entry_points)
        if not entry_points:
            return None
        return {
            "name": qualified,
            "rule": router.rule,
            "service": service,
            "entryPoints": entry_points,
            "priority": (
                router.priority if router.priority is not None else default_priority(router.rule)
            ),
            "retry": retry,
        }

    def _entry_points(self, router: str, wanted: tuple[str, ...] | None) -> list[str]:
        if wanted is None:
            return list(self.entry_points)
        unknown = [ep for ep in wanted if ep not in self.entry_points]
        for ep in unknown:
            self._problem(f"router {router}: unknown entry point {ep!r}")
        return [ep for ep in wanted if ep in self.entry_points]

    def _problem(self, text: str) -> None:
        log.error("%s; the router is not served", text)
        self.problems.append(text)


def _qualify(reference: str, provider: str) -> str:
    """A service or middleware reference with its provider: unqualified means the router's."""
    return reference if "@" in reference else f"{reference}@{provider}"


def _service(qualified: str, svc: ServiceConf, down: set[tuple[str, str]]) -> dict[str, Any]:
    return {
        "servers": [
            {
                "url": s.url,
                "host": s.host,
                "port": s.port,
                "weight": s.weight,
                "healthy": (qualified, s.url) not in down,
            }
            for s in svc.servers
        ],
        "retry": _service_retry(svc.retry),
        "passiveHealthCheck": svc.passive.schema(),
    }


def _service_retry(retry: RetryConf | None) -> dict[str, Any] | None:
    if retry is None:
        return None
    # Folded into `attempts`, so the workers have one thing to look at.
    return {
        "attempts": 0 if retry.disabled else retry.attempts,
        "initialInterval": retry.initial_interval,
    }
