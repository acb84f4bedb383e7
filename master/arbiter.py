"""The master process: owns the sockets, supervises the children, pushes snapshots.

Modelled on gunicorn's arbiter: signal handlers only queue the signal and
wake the loop through a pipe; one single-threaded `selectors` loop does all
the work. No thread and no event loop ever exists in this process, so every
fork() is safe.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from portside.master.channel import Channel, ChannelError
from portside.master.dynamic_config import DynamicConfig, parse_dynamic
from portside.master.errors import ConfigError
from portside.master.logs import setup_logging
from portside.master.proctitle import set_process_name
from portside.master.shared_counters import SharedCounters, SlotAllocator
from portside.master.snapshot import SnapshotBuilder
from portside.master.sockets import ListenerSet, log_migrate_req
from portside.master.static_config import StaticConfig, load_static
from portside.master.stats import Totals

log = logging.getLogger("portside.master")

#: A child that dies sooner than this after starting counts as a failed start.
_FAILED_START = 2.0
_MAX_BACKOFF = 30.0
#: Workers wait for a first snapshot; publish one after this even if a provider is silent.
_FIRST_SNAPSHOT_DEADLINE = 5.0
_FAST_STOP_TIMEOUT = 5.0
_GRACEFUL_STOP_TIMEOUT = 15.0  # the workers' grace period plus a margin
_HANDLED_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGCHLD,
    signal.SIGHUP,
    signal.SIGUSR1,
    signal.SIGTTIN,
    signal.SIGTTOU,
)


@dataclass
class Child:
    """A process the master supervises: a worker (slot >= 0) or discovery (slot -1)."""

    pid: int
    slot: int
    channel: Channel
    started: float
    generation_acked: int = 0
    #: When the child last sent anything; workers send at least a heartbeat a second.
    last_seen: float = 0.0
    stuck: bool = False  # killed for a missed heartbeat


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


@dataclass
class Arbiter:
    """Supervises discovery and the workers for one static configuration."""

    config: StaticConfig
    listeners: ListenerSet = field(default_factory=ListenerSet)
    children: dict[int, Child] = field(default_factory=dict)
    restarts: dict[int, Restarts] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.counters = SharedCounters()
        self.worker_count = self.config.worker_count
        self.totals = Totals()
        self.builder = SnapshotBuilder(list(self.config.entry_points), SlotAllocator(self.counters))
        self.snapshot: dict[str, Any] | None = None
        self.provider_configs: dict[str, DynamicConfig] = {}
        # (service, server url) pairs failing their active health checks. Kept
        # across discovery restarts until the new process reports its own.
        self.unhealthy: set[tuple[str, str]] = set()
        self.expected_providers = {
            name
            for name, settings in (
                ("file", self.config.file_provider),
                ("docker", self.config.docker_provider),
            )
            if settings is not None
        }
        self.selector = selectors.DefaultSelector()
        self.signals: list[int] = []
        self.stopping: str | None = None
        self.stop_deadline = 0.0
        self.started = time.monotonic()
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # -- the loop -------------------------------------------------------------

    def run(self) -> int:
        try:
            for name, ep in self.config.entry_points.items():
                self.listeners.ensure(name, ep.host, ep.port, self.worker_count)
        except OSError as exc:
            log.error("cannot listen: %s", exc)
            return 1
        log_migrate_req()
        for name, ep in self.config.entry_points.items():
            log.info(
                "entry point %s on %s:%d, %d workers",
                name,
                ep.host,
                ep.port,
                self.config.worker_count,
            )
        self._install_signals()
        self.selector.register(self._wakeup_r, selectors.EVENT_READ, None)
        if self.expected_providers:
            self._spawn(-1)
        else:
            self._publish()
        for slot in range(self.worker_count):
            self._spawn(slot)
        while self.children or not self.stopping:
            try:
                self._tick()
            except Exception:
                # fork() failing (EAGAIN, ENOMEM), a bug: log it and go on,
                # since the workers keep serving whatever the master hits.
                log.exception("error in the master loop")
        self.listeners.close()
        log.info("stopped")
        return 0

    def _tick(self) -> None:
        for key, mask in self.selector.select(timeout=self._next_timeout()):
            if key.data is None:
                self._drain_wakeup()
            elif mask & selectors.EVENT_WRITE:
                key.data.channel.flush()
                self._update_interest(key.data)
            if mask & selectors.EVENT_READ and key.data is not None:
                self._read_child(key.data)
        self._handle_signals()
        self._reap()
        now = time.monotonic()
        if self.stopping:
            if now > self.stop_deadline:
                self._kill_all(signal.SIGKILL)
            return
        if self.snapshot is None and now - self.started > _FIRST_SNAPSHOT_DEADLINE:
            log.warning("no configuration from discovery yet; serving an empty one")
            self._publish()
        self._kill_stuck(now)
        self._respawn_due(now)

    def _kill_stuck(self, now: float) -> None:
        """Kill workers whose event loop has been silent for workers.timeout (as gunicorn)."""
        timeout = self.config.worker_timeout
        for child in self.children.values():
            silent = now - max(child.last_seen, child.started)
            if child.slot >= 0 and not child.stuck and silent > timeout:
                log.error(
                    "worker %d (pid %d) sent no heartbeat for %.1fs: its event loop is stuck;"
                    " killing it",
                    child.slot,
                    child.pid,
                    silent,
                )
                child.stuck = True
                self._signal(child.pid, signal.SIGKILL)

    def _next_timeout(self) -> float:
        pending = [r.due for slot, r in self.restarts.items() if not self._running(slot)]
        if not pending:
            return 1.0
        return max(0.0, min(1.0, min(pending) - time.monotonic()))

    # -- signals --------------------------------------------------------------

    def _install_signals(self) -> None:
        signal.set_wakeup_fd(self._wakeup_w)
        for sig in _HANDLED_SIGNALS:
            signal.signal(sig, self._queue_signal)

    def _queue_signal(self, signum: int, frame: object) -> None:
        # Only queue: the loop does the work (the wake-up fd already woke it).
        self.signals.append(signum)

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self._wakeup_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _handle_signals(self) -> None:
        while self.signals:
            sig = self.signals.pop(0)
            if sig in (signal.SIGTERM, signal.SIGINT):
                self._stop("fast", signal.SIGTERM, _FAST_STOP_TIMEOUT)
            elif sig == signal.SIGQUIT:
                self._stop("graceful", signal.SIGQUIT, _GRACEFUL_STOP_TIMEOUT)
            elif sig == signal.SIGTTIN:
                self._add_worker()
            elif sig == signal.SIGTTOU:
                self._remove_worker()
            elif sig != signal.SIGCHLD:
                log.warning("signal %s is not supported yet; ignored", signal.Signals(sig).name)

    def _stop(self, how: str, worker_signal: int, timeout: float) -> None:
        if self.stopping == "fast" or self.stopping == how:
            return
        log.info("%s stop", how)
        self.stopping = how
        self.stop_deadline = time.monotonic() + timeout
        for child in self.children.values():
            self._signal(child.pid, worker_signal if child.slot >= 0 else signal.SIGTERM)
        # The workers close their copies as they stop accepting; closing the
        # master's too takes the sockets out of their SO_REUSEPORT groups at
        # once, so the kernel sends new connections to another instance on the
        # same port (a blue/green swap) instead of queueing them here until
        # the drain ends. With net.ipv4.tcp_migrate_req=1 it also moves what
        # is already queued.
        self.listeners.close()

    def _add_worker(self) -> None:
        """TTIN: one worker more, in a new slot with sockets of its own."""
        slot = self.worker_count
        try:
            for name, ep in self.config.entry_points.items():
                self.listeners.ensure(name, ep.host, ep.port, slot + 1)
        except OSError as exc:
            log.error("cannot add a worker: %s", exc)
            return
        self.worker_count += 1
        log.info("TTIN: %d workers", self.worker_count)
        self._spawn(slot)

    def _remove_worker(self) -> None:
        """TTOU: one worker fewer; the last slot's worker drains and its sockets close.

        Closing a socket of a SO_REUSEPORT group resets the connections still
        queued on it, unless net.ipv4.tcp_migrate_req=1 lets the kernel move
        them to the remaining sockets (DESIGN §3).
        """
        if self.worker_count <= 1:
            log.warning("TTOU: keeping the last worker")
            return
        self.worker_count -= 1
        slot = self.worker_count
        self.restarts.pop(slot, None)
        for child in self.children.values():
            if child.slot == slot:
                self._signal(child.pid, signal.SIGQUIT)
        self.listeners.close_slot(slot)
        log.info("TTOU: %d workers", self.worker_count)
        log_migrate_req()

    def _kill_all(self, sig: int) -> None:
        for child in self.children.values():
            self._signal(child.pid, sig)

    @staticmethod
    def _signal(pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    # -- children -------------------------------------------------------------

    def _running(self, slot: int) -> bool:
        return any(c.slot == slot for c in self.children.values())

    def _spawn(self, slot: int) -> None:
        parent_end, child_end = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            parent_end.close()
            self._exec_child(slot, child_end)
        child_end.close()
        child = Child(pid, slot, Channel(parent_end), time.monotonic())
        self.children[pid] = child
        self.selector.register(child.channel, selectors.EVENT_READ, child)
        if slot >= 0 and self.snapshot is not None:
            self._send(child, {"type": "snapshot", "snapshot": self.snapshot})
        log.info("started %s (pid %d)", _describe(slot), pid)

    def _exec_child(self, slot: int, channel: socket.socket) -> None:
        """In the forked child: drop the master's resources and run the child's main."""
        code = 1
        try:
            set_process_name("portside-disc" if slot < 0 else f"portside-w{slot}")
            signal.set_wakeup_fd(-1)
            self.selector.close()
            os.close(self._wakeup_r)
            os.close(self._wakeup_w)
            for child in self.children.values():
                child.channel.close()
            main: Callable[[], int]
            if slot < 0:
                from portside.master.discovery import run_discovery

                setup_logging("discovery", self.config.log_level)
                self.listeners.close()
                main = lambda: run_discovery(channel, self.config)  # noqa: E731
            else:
                from portside.worker.main import run_worker

                setup_logging(f"worker {slot}", self.config.log_level)
                sockets = self.listeners.for_slot(slot)
                for sock in self.listeners.all():
                    if sock not in sockets.values():
                        sock.close()
                main = lambda: run_worker(  # noqa: E731
                    slot, sockets, channel, self.config, self.counters.view
                )
            code = main()
        except KeyboardInterrupt:
            code = 0
        except BaseException:
            logging.getLogger("portside").exception("%s crashed", _describe(slot))
        finally:
            logging.shutdown()
            os._exit(code)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            self.selector.unregister(child.channel)
            child.channel.close()
            if self.stopping or child.slot >= self.worker_count:
                continue  # stopping, or a slot removed by TTOU
            now = time.monotonic()
            delay = self.restarts.setdefault(child.slot, Restarts()).after_exit(
                now - child.started, now
            )
            log.warning(
                "%s (pid %d) %s; restarting%s",
                _describe(child.slot),
                pid,
                _exit_reason(status),
                f" in {delay:.1f}s (it keeps failing at start)" if delay else "",
            )

    def _respawn_due(self, now: float) -> None:
        for slot, restart in self.restarts.items():
            if restart.due <= now and not self._running(slot):
                self._spawn(slot)

    # -- messages -------------------------------------------------------------

    def _read_child(self, child: Child) -> None:
        try:
            messages = child.channel.receive()
        except (EOFError, ChannelError):
            return  # the exit is handled when the child is reaped
        if messages:
            child.last_seen = time.monotonic()
        for message in messages:
            try:
                self._handle(child, message)
            except Exception:
                # The supervisor must outlive any bad message or bug in
                # building a snapshot: the workers keep the last good one.
                log.exception(
                    "cannot apply a %r message from %s", message.get("type"), _describe(child.slot)
                )

    def _handle(self, child: Child, message: dict[str, Any]) -> None:
        """Apply one message: acks and stats from workers, configs and health from discovery."""
        kind = message.get("type")
        if kind == "ack" and child.slot >= 0:
            child.generation_acked = int(message.get("generation", 0))
        elif kind == "stats" and child.slot >= 0:
            self.totals.add(message)
        elif kind == "config" and child.slot < 0:
            self._provider_update(str(message.get("provider")), message.get("config"))
        elif kind == "health" and child.slot < 0:
            self._health_update(message.get("unhealthy"))

    def _provider_update(self, provider: str, data: dict[str, Any] | None) -> None:
        if data is None:
            config = self.provider_configs.get(provider, DynamicConfig.EMPTY)
        else:
            try:
                config = parse_dynamic(data, f"provider {provider}")
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("%s", problem)
                return
        self.provider_configs[provider] = config
        if self.expected_providers <= set(self.provider_configs):
            self._publish()

    def _health_update(self, pairs: Any) -> None:
        try:
            unhealthy = {(str(service), str(url)) for service, url in pairs}
        except (TypeError, ValueError):
            log.error("discovery sent an invalid health report: %r", pairs)
            return
        if unhealthy == self.unhealthy:
            return
        self.unhealthy = unhealthy
        # Before the first snapshot there is nothing to correct: it will carry the set.
        if self.snapshot is not None:
            self._publish()

    def _publish(self) -> None:
        """Build a snapshot from the providers' configurations and send it to every worker."""
        snapshot = self.builder.build(self.provider_configs, unhealthy=self.unhealthy)
        if self.snapshot is not None and _same_routes(snapshot, self.snapshot):
            self.builder.generation -= 1
            return
        self.snapshot = snapshot
        log.info(
            "configuration generation %d: %d routers, %d services",
            snapshot["generation"],
            len(snapshot["routers"]),
            len(snapshot["services"]),
        )
        for child in self.children.values():
            if child.slot >= 0:
                self._send(child, {"type": "snapshot", "snapshot": snapshot})

    def _send(self, child: Child, message: dict[str, Any]) -> None:
        child.channel.send(message)
        self._update_interest(child)

    def _update_interest(self, child: Child) -> None:
        events = selectors.EVENT_READ
        if child.channel.wants_write:
            events |= selectors.EVENT_WRITE
        try:
            self.selector.modify(child.channel, events, child)
        except (KeyError, ValueError):
            pass


def _same_routes(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["routers"] == b["routers"] and a["services"] == b["services"]


def _describe(slot: int) -> str:
    return "discovery" if slot < 0 else f"worker {slot}"


def _exit_reason(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"  # real-time signals have no name
        return f"was killed by {name}"
    return f"exited with code {os.waitstatus_to_exitcode(status)}"


def run(config_path: str) -> int:
    """`portside --config FILE`: run the proxy in the foreground until stopped."""
    setup_logging("master")
    try:
        config = load_static(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        return 2
    setup_logging("master", config.log_level)
    try:
        return Arbiter(config).run()
    except OSError as exc:
        if exc.errno == errno.EINTR:
            return 0
        raise
