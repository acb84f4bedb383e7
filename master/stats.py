"""The master's totals of what every worker counted (see portside.worker.stats)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("portside.master")


class Totals:
    """Responses by (service, status) and resends by service, summed over all workers."""

    def __init__(self) -> None:
        self.responses: dict[tuple[str, int], int] = {}
        self.retries: dict[str, int] = {}

    def add(self, message: dict[str, Any]) -> None:
        """Add one worker's report; a malformed entry is logged and skipped."""
        try:
            for service, status, count in message.get("responses", ()):
                key = (str(service), int(status))
                self.responses[key] = self.responses.get(key, 0) + int(count)
                log.debug("stats: %s %d total %d", key[0] or "-", key[1], self.responses[key])
            for service, count in message.get("retries", ()):
                self.retries[str(service)] = self.retries.get(str(service), 0) + int(count)
                log.debug("stats: %s resends total %d", service, self.retries[str(service)])
        except (TypeError, ValueError) as exc:
            log.error("bad stats report from a worker: %s", exc)
