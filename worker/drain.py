"""A worker's graceful stop: stop accepting, let requests in flight finish, then exit.

Each entry point goes through Traefik's two lifeCycle phases:

1. `requestAcceptGraceTimeout`: still accept and serve as usual (only /ping
   answers 503), so a load balancer in front has time to notice and stop
   sending new connections;
2. `graceTimeOut`: stop accepting, answer what is in flight with
   `Connection: close`, then close every connection still open.

A worker retired by a reload skips phase 1: the next generation already
accepts on the same sockets, so closing ours loses nothing queued.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from portside.master.static_config import EntryPoint
from portside.worker.runtime import WorkerRuntime

log = logging.getLogger("portside.worker")

#: An idle keep-alive connection is closed once it has been quiet this long.
#: Closing one at once would race a request the client may be sending at
#: that very moment (RFC 9112 §9.6), which a client such as wrk counts as an
#: error; a busy connection gets `Connection: close` on its next response.
IDLE_CLOSE_AFTER = 1.0
_POLL = 0.05


@dataclass(frozen=True, slots=True)
class Phases:
    """How long one entry point keeps accepting, then how long it drains."""

    accept_grace: float
    grace: float


def quit_phases(entry_points: dict[str, EntryPoint]) -> dict[str, Phases]:
    """The phases of a graceful stop (QUIT), from each entry point's lifeCycle."""
    return {name: Phases(ep.accept_grace, ep.grace_timeout) for name, ep in entry_points.items()}


def retire_phases(entry_points: dict[str, EntryPoint], grace: float) -> dict[str, Phases]:
    """The phases of a worker retired by a reload or replaced: drain at once, for `grace`."""
    return {name: Phases(0.0, grace) for name in entry_points}


async def drain(runtime: WorkerRuntime, phases: dict[str, Phases]) -> None:
    """Run the stop phases of every entry point; return when nothing is left to serve."""
    runtime.shutting_down = True
    loop = runtime.loop
    start = loop.time()
    accepting = {
        name: ep.acceptor for name, ep in runtime.entry_points.items() if ep.acceptor is not None
    }
    draining: set[str] = set()
    over: set[str] = set()
    closed = False  # every server was already closed at the previous poll
    while True:
        elapsed = loop.time() - start
        for name in [n for n in accepting if elapsed >= phases[n].accept_grace]:
            accepting.pop(name).close()
            draining.add(name)
        for name in draining - over:
            if elapsed >= phases[name].accept_grace + phases[name].grace:
                over.add(name)
                _cut(runtime, name)
        now = loop.time()
        for conn in list(runtime.connections):
            if conn.entry_point.name in draining:
                conn.closing = True
                if conn.idle and now - conn.last_active > IDLE_CLOSE_AFTER:
                    conn.close()
        # Only after a poll since the last close: a connection accepted in the
        # same loop iteration gets its connection_made() in the next one, and
        # would be dropped unanswered if the worker exited now.
        if not accepting and not runtime.connections and closed:
            return
        closed = not accepting
        await asyncio.sleep(_POLL)


def _cut(runtime: WorkerRuntime, entry_point: str) -> None:
    """The grace period of an entry point is over: cut whatever it still holds."""
    late = [c for c in runtime.connections if c.entry_point.name == entry_point]
    if late:
        log.warning("grace period over on %s; cutting %d connections", entry_point, len(late))
    for conn in late:
        conn.abort()
