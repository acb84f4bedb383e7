"""Active health checks: probe each server of a service that asks for it.

They run in the discovery process (DESIGN §2, §5), never in the master nor
in every worker. One scheduler thread keeps a heap of due probes and hands
them to a small thread pool, so a server that hangs until its timeout delays
no other server's probe (up to the pool's size of hung servers at once).

A server goes down after two consecutive failed probes and comes back after
two consecutive good ones, so one lost probe does not make it flap. Every
transition is logged, and `report` receives the whole set of servers that
are down, as (qualified service, server url) pairs.
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from portside.master.dynamic_config import DynamicConfig, HealthCheckConf

log = logging.getLogger("portside.health")

#: Consecutive probes that must disagree with a server's state to flip it.
THRESHOLD = 2
MAX_PARALLEL_PROBES = 8
_USER_AGENT = "portside-health-check"

Key = tuple[str, str]  # (qualified service name, server url)
Report = Callable[[set[Key]], None]


@dataclass(frozen=True, slots=True)
class Target:
    """What to probe: one server of one service, with that service's check settings."""

    service: str  # qualified: "name@provider"
    url: str
    host: str
    port: int
    check: HealthCheckConf

    @property
    def key(self) -> Key:
        return (self.service, self.url)


@dataclass(eq=False, slots=True)
class _State:
    """A target's health state; compared by identity, so a replaced one is recognised."""

    target: Target
    up: bool = True  # servers start up, as in Traefik
    streak: int = 0  # consecutive results that disagree with `up`
    done: int = 0  # probes completed


def probe(target: Target) -> tuple[bool, str]:
    """GET the target's health path once; return (healthy, what happened)."""
    check = target.check
    conn = http.client.HTTPConnection(target.host, target.port, timeout=check.timeout)
    headers = {
        "Host": check.hostname or urlsplit(target.url).netloc,
        "User-Agent": _USER_AGENT,
        "Connection": "close",
    }
    try:
        conn.request("GET", check.path, headers=headers)
        status = conn.getresponse().status
    except TimeoutError:
        return False, f"timed out after {check.timeout:g}s"
    except ConnectionRefusedError:
        return False, "connection refused"
    except OSError as exc:
        return False, exc.strerror or str(exc)
    except http.client.HTTPException as exc:
        return False, f"invalid response: {exc or type(exc).__name__}"
    finally:
        conn.close()
    if check.status is not None:
        healthy, expected = status == check.status, str(check.status)
    else:  # Traefik's default: any success or redirect
        healthy, expected = 200 <= status < 400, "2xx or 3xx"
    return healthy, f"status {status}" if healthy else f"status {status}, expected {expected}"


class HealthChecker:
    """Probes the servers of every service with a health check, on their intervals.

    Thread-safe. `report` is called with the checker's lock held, so reports
    arrive in the order the transitions happened; it must not call back into
    the checker.
    """

    def __init__(self, report: Report, max_parallel: int = MAX_PARALLEL_PROBES) -> None:
        self._report = report
        self._lock = threading.Condition()
        self._probes: dict[Key, _State] = {}
        self._queue: list[tuple[float, int, _State]] = []  # heap of (due, tie-breaker, probe)
        self._order = itertools.count()
        self._stopped = False
        # A restarted discovery process starts from scratch while the master
        # keeps its last set, so the first report waits until every server has
        # been probed enough to say whether it is down (or a transition comes first).
        self._reported = False
        self._pool = ThreadPoolExecutor(max_parallel, thread_name_prefix="health-probe")
        self._scheduler = threading.Thread(
            target=self._schedule_loop, name="health-scheduler", daemon=True
        )
        self._scheduler.start()

    def update(self, provider: str, config: DynamicConfig) -> None:
        """Check the servers of `provider`'s services that have a health check, and only them."""
        wanted: dict[Key, Target] = {}
        for name, service in config.services.items():
            if service.health_check is None:
                continue
            for server in service.servers:
                target = Target(
                    f"{name}@{provider}", server.url, server.host, server.port, service.health_check
                )
                wanted[target.key] = target
        with self._lock:
            if self._stopped:
                return
            dropped_down = False
            for key, state in list(self._probes.items()):
                if key[0].rpartition("@")[2] == provider and key not in wanted:
                    del self._probes[key]
                    dropped_down |= not state.up
            now = time.monotonic()
            for key, target in wanted.items():
                old = self._probes.get(key)
                if old is not None and old.target == target:
                    continue
                # New settings start a new count, but a down server stays down
                # until it passes the new check.
                state = _State(target, up=old is None or old.up)
                self._probes[key] = state
                self._schedule(state, now)
            if dropped_down:
                self._send_report()
            else:
                self._maybe_first_report()

    def stop(self) -> None:
        """Stop probing; probes in flight finish in the background and are ignored."""
        with self._lock:
            self._stopped = True
            self._lock.notify()
        self._scheduler.join()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- under the lock -------------------------------------------------------

    def _schedule(self, state: _State, due: float) -> None:
        heapq.heappush(self._queue, (due, next(self._order), state))
        self._lock.notify()

    def _current(self, state: _State) -> bool:
        """Whether `state` is still checked (not removed nor replaced by an update)."""
        return not self._stopped and self._probes.get(state.target.key) is state

    def _down(self) -> set[Key]:
        return {key for key, state in self._probes.items() if not state.up}

    def _send_report(self) -> None:
        self._reported = True
        self._report(self._down())

    def _maybe_first_report(self) -> None:
        probes = self._probes.values()
        if not self._reported and probes and all(s.done >= THRESHOLD for s in probes):
            self._send_report()

    def _record(self, state: _State, healthy: bool, detail: str) -> None:
        state.done += 1
        if healthy == state.up:
            state.streak = 0
        else:
            state.streak += 1
            log.debug(
                "health check of %s in %s: %s (%d/%d)",
                state.target.url,
                state.target.service,
                detail,
                state.streak,
                THRESHOLD,
            )
        if state.streak < THRESHOLD:
            self._maybe_first_report()
            return
        state.up, state.streak = healthy, 0
        target = state.target
        if healthy:
            log.info("server %s of service %s is up again: %s", target.url, target.service, detail)
        else:
            log.warning("server %s of service %s is down: %s", target.url, target.service, detail)
        self._send_report()

    # -- threads --------------------------------------------------------------

    def _schedule_loop(self) -> None:
        with self._lock:
            while not self._stopped:
                now = time.monotonic()
                while self._queue and self._queue[0][0] <= now:
                    _, _, state = heapq.heappop(self._queue)
                    if self._current(state):
                        self._pool.submit(self._run_probe, state)
                self._lock.wait(self._queue[0][0] - now if self._queue else None)

    def _run_probe(self, state: _State) -> None:
        started = time.monotonic()
        try:
            healthy, detail = probe(state.target)
        except Exception as exc:  # a bug here must not end this server's checks silently
            log.exception("health check of %s failed", state.target.url)
            healthy, detail = False, f"probe error: {exc}"
        with self._lock:
            if not self._current(state):
                return
            self._record(state, healthy, detail)
            # The next probe is due one interval after this one started; one
            # slower than the interval is followed at once, never overlapped.
            self._schedule(state, started + state.target.check.interval)
