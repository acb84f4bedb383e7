"""A service's servers, and picking one by smooth weighted round robin.

nginx's smooth weighted round robin spreads a heavy server's turns evenly
(weights 5,1,1 give a a b a c a a, not a a a a a b c). The order over one
cycle depends only on the weights, so every worker computes the same cycle
from the snapshot and they all walk it with one shared counter per service
(see portside.master.shared_counters). The balancer knows its Server class,
so that compiled code reads `available` with a direct call.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import gcd
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from portside.worker.upstream import UpstreamPool

#: Longest cycle we precompute; larger weight sums are scaled down to fit.
MAX_CYCLE: Final = 4096
#: Where the shared counter starts over. Below 2**62 it stays a machine integer
#: in compiled code; wrapping at 2**64 would take arbitrary-precision arithmetic
#: on every pick. (Either wrap is a once-in-forever skip of a few turns.)
_WRAP: Final = (1 << 62) - 1


class Server:
    """One backend of a service, as a worker sees it."""

    __slots__ = ("url", "weight", "pool", "healthy")

    def __init__(self, url: str, weight: int, pool: UpstreamPool, healthy: bool) -> None:
        self.url = url
        self.weight = weight
        self.pool = pool
        #: From the active health checks, via the snapshot.
        self.healthy = healthy

    @property
    def available(self) -> bool:
        """Whether a new request may go here: healthy and not ejected by passive health."""
        pool = self.pool
        # Asking the pool costs a call; a server never ejected needs none.
        return self.healthy and (not pool.ejected_until or pool.accepting())


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


class Balancer:
    """Picks the next available server of one service."""

    __slots__ = ("servers", "_cycle", "_counters", "_slot")

    def __init__(self, servers: Sequence[Server], counters: memoryview, slot: int) -> None:
        self.servers = list(servers)
        self._cycle = [self.servers[i] for i in smooth_cycle([s.weight for s in servers])]
        self._counters = counters
        self._slot = slot

    def pick(self, exclude: list[Server] | None = None) -> Server | None:
        """The next available server not in `exclude`, or None if there is none."""
        cycle = self._cycle
        n = len(cycle)
        if not n:
            return None
        counters, slot = self._counters, self._slot
        position: int = counters[slot]
        counters[slot] = position + 1 if position < _WRAP else 0
        # Almost always the server whose turn it is takes the request: the walk
        # goes on only past servers that are down or already tried.
        for step in range(n):
            server = cycle[(position + step) % n]
            if (exclude is None or server not in exclude) and server.available:
                return server
        return None
