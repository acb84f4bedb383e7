"""Merge every provider's dynamic configuration into one snapshot for the workers.

Names are qualified with their provider, as Traefik does (`whoami@file`,
`whoami@docker`), so providers can never clash. A router whose service or
entry points do not exist is left out and the reason logged; the rest of the
configuration still applies, so one bad label cannot take other routes down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from portside.master.dynamic_config import DynamicConfig
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

    def build(self, configs: dict[str, DynamicConfig]) -> dict[str, Any]:
        """Return the next snapshot (a JSON-ready dict) for the given provider configs."""
        self.generation += 1
        self.problems = []
        services: dict[str, dict[str, Any]] = {}
        for provider, config in sorted(configs.items()):
            for name, svc in config.services.items():
                services[f"{name}@{provider}"] = {
                    "servers": [
                        {"url": s.url, "host": s.host, "port": s.port, "weight": s.weight}
                        for s in svc.servers
                    ]
                }
        for name, slot in self.slots.assign(set(services)).items():
            services[name]["slot"] = slot

        routers = []
        for provider, config in sorted(configs.items()):
            for name, router in config.routers.items():
                qualified = f"{name}@{provider}"
                service = (
                    router.service if "@" in router.service else f"{router.service}@{provider}"
                )
                if service not in services:
                    self._problem(f"router {qualified}: unknown service {service!r}")
                    continue
                entry_points = self._entry_points(qualified, router.entry_points)
                if not entry_points:
                    continue
                routers.append(
                    {
                        "name": qualified,
                        "rule": router.rule,
                        "service": service,
                        "entryPoints": entry_points,
                        "priority": (
                            router.priority
                            if router.priority is not None
                            else default_priority(router.rule)
                        ),
                    }
                )
        return {"generation": self.generation, "routers": routers, "services": services}

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
