"""Round-robin counters shared by all workers, like nginx's upstream `zone`.

Each worker balancing on its own would make the sequence a client sees
depend on which worker its connection hashed to. Instead every service gets
a slot in an anonymous shared mapping created before the fork, and every
worker advances the same counter. The increment is not atomic: two workers
racing may both take the same position, which skews balance by one request
and never breaks anything, so no lock is paid on the hot path.
"""

from __future__ import annotations

import mmap

SLOTS = 65536


class SharedCounters:
    """A fixed array of 64-bit counters in memory shared across fork()."""

    def __init__(self, slots: int = SLOTS) -> None:
        self._map = mmap.mmap(-1, slots * 8, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
        self.view = memoryview(self._map).cast("Q")


class SlotAllocator:
    """Gives each service name a stable counter slot, reusing freed ones."""

    def __init__(self, counters: SharedCounters) -> None:
        self._counters = counters
        self._slots: dict[str, int] = {}
        self._free: list[int] = []
        self._next = 0

    def assign(self, names: set[str]) -> dict[str, int]:
        """Keep the slots of names seen before, free the others, allocate new ones."""
        for gone in set(self._slots) - names:
            self._free.append(self._slots.pop(gone))
        for name in sorted(names - set(self._slots)):
            if self._free:
                slot = self._free.pop()
            else:
                slot = self._next % len(self._counters.view)
                self._next += 1
            self._counters.view[slot] = 0
            self._slots[name] = slot
        return dict(self._slots)
