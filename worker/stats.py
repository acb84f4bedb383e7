"""Per-worker counters, reported to the master as deltas once a second.

The hot path only increments plain dict entries; the master adds every
worker's deltas up, so its totals are exact across workers and survive a
worker's restart.
"""

from __future__ import annotations

from typing import Any


class WorkerStats:
    """Counts since the last report."""

    __slots__ = ("responses", "retries")

    def __init__(self) -> None:
        #: (service, status) -> responses; service "" when no router matched
        self.responses: dict[tuple[str, int], int] = {}
        #: service -> requests resent to another server
        self.retries: dict[str, int] = {}

    def take(self) -> dict[str, Any] | None:
        """The report message for what was counted since the last one, and reset."""
        if not self.responses and not self.retries:
            return None
        message = {
            "type": "stats",
            "responses": [[service, status, n] for (service, status), n in self.responses.items()],
            "retries": [[service, n] for service, n in self.retries.items()],
        }
        self.responses = {}
        self.retries = {}
        return message
