"""Smooth weighted round robin, with its position kept in shared memory.

nginx's smooth weighted round robin spreads a heavy server's turns evenly
(weights 5,1,1 give a a b a c a a, not a a a a a b c). The order over one
cycle depends only on the weights, so every worker computes the same cycle
from the snapshot and they all walk it with one shared counter per service
(see portside.master.shared_counters).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from math import gcd
from typing import Final, Generic, Protocol, TypeVar

#: Longest cycle we precompute; larger weight sums are scaled down to fit.
MAX_CYCLE: Final = 4096


class Candidate(Protocol):
    """What the balancer needs of a server (read-only, so a property will do)."""

    @property
    def weight(self) -> int: ...

    @property
    def available(self) -> bool: ...


C = TypeVar("C", bound=Candidate)


def smooth_cycle(weights: Sequence[int]) -> list[int]:
    """Indexes of the servers in smooth weighted round-robin order over one cycle."""
    divisor = 0
    for w in weights:
        divisor = gcd(divisor, w)
    if divisor == 0:
        return []
    weights = [w // divisor for w in weights]
    total = sum(weights)
    if total > MAX_CYCLE:
        weights = [max(1, w * MAX_CYCLE // total) if w else 0 for w in weights]
        total = sum(weights)
    current = [0] * len(weights)
    cycle = []
    for _ in range(total):
        best = -1
        for i, w in enumerate(weights):
            current[i] += w
            if w and (best < 0 or current[i] > current[best]):
                best = i
        current[best] -= total
        cycle.append(best)
    return cycle


class Balancer(Generic[C]):
    """Picks the next available server of one service."""

    __slots__ = ("servers", "_cycle", "_counters", "_slot")

    def __init__(self, servers: Sequence[C], counters: memoryview, slot: int) -> None:
        self.servers = list(servers)
        self._cycle = [self.servers[i] for i in smooth_cycle([s.weight for s in servers])]
        self._counters = counters
        self._slot = slot

    def pick(self, exclude: Collection[object] = ()) -> C | None:
        """The next available server not in `exclude`, or None if there is none."""
        cycle = self._cycle
        n = len(cycle)
        if not n:
            return None
        counters, slot = self._counters, self._slot
        position = counters[slot]
        counters[slot] = (position + 1) & 0xFFFFFFFFFFFFFFFF
        # Almost always the server whose turn it is takes the request: try it
        # before setting up the walk over the others.
        server = cycle[position % n]
        if (not exclude or server not in exclude) and server.available:
            return server
        for step in range(1, n):
            server = cycle[(position + step) % n]
            if server not in exclude and server.available:
                return server
        return None
