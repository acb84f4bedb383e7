"""The master's view of its children: workers (slot >= 0) and discovery (slot -1)."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field

from portside.master.channel import Channel
from portside.master.process_sample import ProcessSampler

DISCOVERY = -1
#: A child that dies sooner than this after starting counts as a failed start.
_FAILED_START = 2.0
_MAX_BACKOFF = 30.0


@dataclass
class Child:
    """A process the master supervises."""

    pid: int
    slot: int  # DISCOVERY, or the worker's slot
    channel: Channel
    started: float
    #: The worker generation it was started in; each accepted reload starts a new one.
    generation: int = 1
    #: The snapshot generation the worker last acknowledged.
    snapshot_acked: int = 0
    #: When the child last sent anything; workers send at least a heartbeat a second.
    last_seen: float = 0.0
    serving: bool = False  # the worker has adopted its sockets and accepts
    stuck: bool = False  # killed for a missed heartbeat
    #: Replaced (by a reload, or for its memory): never respawned, and told to
    #: drain once every slot has a serving successor.
    superseded: bool = False
    #: Once told to drain: when it must be gone, or be killed.
    drain_deadline: float | None = None
    # Sampled once a second: /proc for memory and CPU, the worker's own report for connections.
    rss: int = 0
    #: The RSS sampled when it started serving: what a fresh worker needs.
    serving_rss: int = 0
    memory_warned: bool = False
    cpu_percent: float = 0.0
    connections: int = 0
    #: From the worker's heartbeat: open client connections per entry point, and the
    #: (service, url) pairs its passive health checks hold out of rotation.
    open_connections: dict[str, int] = field(default_factory=dict)
    ejected: list[tuple[str, str]] = field(default_factory=list)
    process: ProcessSampler | None = field(default=None, repr=False)

    @property
    def is_worker(self) -> bool:
        return self.slot != DISCOVERY

    def describe(self) -> str:
        return describe(self.slot)

    def sample(self) -> None:
        """Refresh rss and cpu_percent from /proc; a child already gone keeps the last ones."""
        if self.process is None:
            self.process = ProcessSampler(self.pid)
        try:
            rss = self.process.rss()
            cpu_percent = self.process.cpu_percent()
        except OSError:
            return  # gone between its exit and the reaping
        if not rss:
            return  # a zombie: exited, not reaped yet
        self.rss = rss
        if self.serving and not self.serving_rss:
            self.serving_rss = rss
        self.cpu_percent = cpu_percent


@dataclass
class Restarts:
    """Back-off state for one slot, so a child that keeps dying cannot fork-loop."""

    failures: int = 0
    due: float = 0.0

    def after_exit(self, lived: float, now: float) -> float:
        """Record an exit; return the delay before the next start."""
        self.failures = self.failures + 1 if lived < _FAILED_START else 0
        delay = 0.0 if self.failures <= 1 else min(0.5 * 2 ** (self.failures - 2), _MAX_BACKOFF)
        self.due = now + delay
        return delay


def describe(slot: int) -> str:
    """ "discovery" or "worker N", for log lines."""
    return "discovery" if slot == DISCOVERY else f"worker {slot}"


def exit_reason(status: int) -> str:
    """A wait status in words: "was killed by SIGKILL", "exited with code 1"."""
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"  # real-time signals have no name
        return f"was killed by {name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


def send_signal(pid: int, sig: int) -> None:
    """kill(2), ignoring a process that is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
