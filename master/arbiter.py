"""The master process: owns the sockets, supervises the children, pushes snapshots.

Modelled on gunicorn's arbiter: signal handlers only queue the signal and
wake the loop through a pipe; one single-threaded `selectors` loop does all
the work. No thread and no event loop ever exists in this process, so every
fork() is safe.

Reloads follow nginx: HUP validates the configuration, starts a new
generation of workers on the sockets of the addresses that remain, and tells
the old generation to drain once every slot of the new one is serving. A
configuration that does not validate changes nothing.
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from portside.master.channel import Channel, ChannelError, encode
from portside.master.check import load_file_config
from portside.master.children import (
    DISCOVERY,
    Child,
    Restarts,
    describe,
    exit_reason,
    send_signal,
)
from portside.master.dynamic_config import DynamicConfig, parse_dynamic
from portside.master.errors import ConfigError
from portside.master.logs import reopen_logs, setup_logging
from portside.master.proctitle import set_process_name
from portside.master.shared_counters import SharedCounters, SlotAllocator
from portside.master.snapshot import SnapshotBuilder
from portside.master.sockets import ListenerSet, log_migrate_req
from portside.master.static_config import StaticConfig, load_static
from portside.master.stats import Totals
from portside.master.status import ConfigHistory, StatusInputs, build_status
from portside.master.summary import log_internal_services, log_provider_found, log_startup

# Imported before any fork, so each worker starts with uvloop and httptools
# already loaded (shared copy-on-write) instead of importing them itself:
# that is most of the time a new generation takes to start serving.
from portside.worker.main import run_worker

log = logging.getLogger("portside.master")

#: Workers wait for a first snapshot; publish one after this even if a provider is silent.
_FIRST_SNAPSHOT_DEADLINE = 5.0
_FAST_STOP_TIMEOUT = 5.0
#: Added to a drain's grace before the master kills what is left.
_STOP_MARGIN = 5.0
_SAMPLE_INTERVAL = 1.0
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
class Arbiter:
    """Supervises discovery and the workers; reloads swap the configuration it runs."""

    config: StaticConfig
    listeners: ListenerSet = field(default_factory=ListenerSet)
    children: dict[int, Child] = field(default_factory=dict)
    restarts: dict[int, Restarts] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.counters = SharedCounters()
        self.worker_count = self.config.worker_count
        #: The worker generation: 1 at start, one more per accepted reload.
        self.generation = 1
        #: A generation started but not yet serving in every slot (for its log line).
        self.starting_generation: int | None = None
        self.totals = Totals()
        self.builder = SnapshotBuilder(
            self.config.router_entry_points, SlotAllocator(self.counters)
        )
        self.snapshot: dict[str, Any] | None = None
        self.provider_configs: dict[str, DynamicConfig] = {}
        # (service, server url) pairs failing their active health checks. Kept
        # across discovery restarts until the new process reports its own.
        self.unhealthy: set[tuple[str, str]] = set()
        self.expected_providers = _providers(self.config)
        self.selector = selectors.DefaultSelector()
        self.signals: list[int] = []
        self.stopping: str | None = None
        self.stop_deadline = 0.0
        self.started = time.monotonic()
        self.next_sample = 0.0
        # -- for the internal services (see _push_status)
        #: Servers a provider drains: (qualified service, url) pairs, per provider.
        self.draining: dict[str, set[tuple[str, str]]] = {}
        self.history = ConfigHistory()
        self.wall_started = time.time()
        #: The last status sent to the workers, framed; and when the next one is due.
        self.status_frame: bytes | None = None
        self.status_due = 0.0
        self._wakeup_r, self._wakeup_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # -- the loop -------------------------------------------------------------

    def run(self) -> int:
        try:
            self.listeners.update(self.config.entry_points, self.worker_count)
        except OSError as exc:
            log.error("cannot listen: %s", exc)
            return 1
        log_startup(self.config)
        self._log_entry_points()
        log_internal_services(self.config)
        log_migrate_req()
        if self.config.observability.metrics_entry_point:
            # Served from the start, so loaded now: the first status must not wait for
            # prometheus_client's import. Otherwise it is never loaded (see build_status).
            importlib.import_module("portside.master.metrics")
        self._install_signals()
        self.selector.register(self._wakeup_r, selectors.EVENT_READ, None)
        if self.expected_providers:
            self._spawn(DISCOVERY)
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
        self._kill_late_drainers(now)
        if self.stopping:
            if now > self.stop_deadline:
                self._kill_all(signal.SIGKILL)
            return
        if self.snapshot is None and now - self.started > _FIRST_SNAPSHOT_DEADLINE:
            log.warning("no configuration from discovery yet; serving an empty one")
            self._publish()
        if now >= self.next_sample:
            self.next_sample = now + _SAMPLE_INTERVAL
            self._sample()
        if now >= self.status_due:
            self._push_status(now)
        self._kill_stuck(now)
        self._retire_superseded(now)
        self._respawn_due(now)

    def _next_timeout(self) -> float:
        pending = [r.due for slot, r in self.restarts.items() if not self._running(slot)]
        if not pending:
            return 1.0
        return max(0.0, min(1.0, min(pending) - time.monotonic()))

    def _log_entry_points(self) -> None:
        for name, ep in self.config.entry_points.items():
            log.info(
                "entry point %s on %s:%d, %d workers", name, ep.host, ep.port, self.worker_count
            )

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
                self._stop("fast")
            elif sig == signal.SIGQUIT:
                self._stop("graceful")
            elif self.stopping:
                continue  # nothing else applies to a master on its way out
            elif sig == signal.SIGHUP:
                self._reload()
            elif sig == signal.SIGUSR1:
                self._reopen_logs()
            elif sig == signal.SIGTTIN:
                self._add_worker()
            elif sig == signal.SIGTTOU:
                self._remove_worker()

    def _stop(self, how: str) -> None:
        if self.stopping == "fast" or self.stopping == how:
            return
        log.info("%s stop", how)
        self.stopping = how
        if how == "fast":
            timeout, worker_signal = _FAST_STOP_TIMEOUT, signal.SIGTERM
        else:
            timeout, worker_signal = self.config.stop_timeout + _STOP_MARGIN, signal.SIGQUIT
        self.stop_deadline = time.monotonic() + timeout
        for child in self.children.values():
            send_signal(child.pid, worker_signal if child.is_worker else signal.SIGTERM)
        # The workers close their copies as they stop accepting; closing the
        # master's too takes the sockets out of their SO_REUSEPORT groups at
        # once, so the kernel sends new connections to another instance on the
        # same port (a blue/green swap) instead of queueing them here until
        # the drain ends. With net.ipv4.tcp_migrate_req=1 it also moves what
        # is already queued.
        self.listeners.close()

    def _reopen_logs(self) -> None:
        """USR1: reopen the log file here and in every child (logrotate)."""
        reopen_logs()
        for child in self.children.values():
            send_signal(child.pid, signal.SIGUSR1)
        log.info("USR1: log files reopened")

    def _add_worker(self) -> None:
        """TTIN: one worker more, in a new slot."""
        if self._resize(self.worker_count + 1):
            log.info("TTIN: %d workers", self.worker_count)

    def _remove_worker(self) -> None:
        """TTOU: one worker fewer; the last slot's worker drains once the others serve.

        Its sockets are closed, or kept and served by another worker, as
        net.ipv4.tcp_migrate_req decides (see ListenerSet).
        """
        if self.worker_count <= 1:
            log.warning("TTOU: keeping the last worker")
            return
        if self._resize(self.worker_count - 1):
            log.info("TTOU: %d workers", self.worker_count)
            log_migrate_req()

    def _resize(self, count: int) -> bool:
        """Change the worker count of the running generation; False if it cannot be done.

        A worker whose set of sockets changes (it adopts or gives back the
        socket of a removed slot) is replaced, the way a reload replaces
        every worker: the successor starts, then the old one drains.
        """
        before = {slot: self._socket_fds(slot) for slot in range(self.worker_count)}
        try:
            self.listeners.update(self.config.entry_points, count)
        except OSError as exc:
            log.error("cannot change the worker count: %s", exc)
            return False
        self.worker_count = count
        for slot in [s for s in self.restarts if s >= count]:
            del self.restarts[slot]
        for child in self._workers():
            if child.superseded:
                continue
            if child.slot >= count:
                child.superseded = True  # drained once the remaining slots serve
            elif self._socket_fds(child.slot) != before[child.slot]:
                child.superseded = True
                self._spawn(child.slot)
        for slot in range(count):
            if not self._running(slot):
                self._spawn(slot)
        return True

    def _socket_fds(self, slot: int) -> list[int]:
        sockets = self.listeners.for_slot(slot, self.config.entry_points)
        return sorted(sock.fileno() for socks in sockets.values() for sock in socks)

    def _kill_all(self, sig: int) -> None:
        for child in self.children.values():
            send_signal(child.pid, sig)

    # -- reloads --------------------------------------------------------------

    def _reload(self) -> None:
        """HUP: validate the configuration again; if valid, start a new worker generation.

        Whatever is wrong leaves everything running as it was: the file
        provider's configuration is validated with the static one, and the
        new addresses are bound before anything is replaced.
        """
        log.info("HUP: reloading %s", self.config.source)
        try:
            config = load_static(self.config.source)
            file_config = load_file_config(config)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("%s", problem)
            log.error(
                "reload failed: still running worker generation %d unchanged", self.generation
            )
            return
        try:
            self.listeners.update(config.entry_points, config.worker_count)
        except OSError as exc:
            log.error("reload failed: cannot listen: %s; still running unchanged", exc)
            return
        old, self.config = self.config, config
        self.generation += 1
        self.starting_generation = self.generation
        self.worker_count = config.worker_count
        self.restarts.clear()
        if (old.log_level, old.log_file) != (config.log_level, config.log_file):
            setup_logging("master", config.log_level, config.log_file)
        log.info("reload: configuration valid; starting worker generation %d", self.generation)
        self.history.succeeded()
        self._log_entry_points()
        log_internal_services(self.config)
        self._reconfigure_providers(old, file_config)
        for child in self._workers():
            child.superseded = True
        for slot in range(self.worker_count):
            self._spawn(slot)

    def _reconfigure_providers(self, old: StaticConfig, file_config: DynamicConfig | None) -> None:
        """Apply the new configuration's providers, and publish what they give now."""
        self.builder.entry_points = self.config.router_entry_points
        self.expected_providers = _providers(self.config)
        for gone in set(self.provider_configs) - self.expected_providers:
            del self.provider_configs[gone]
            self.draining.pop(gone, None)
        if file_config is not None:
            # Validated just now: apply it at once rather than on the next poll,
            # so the new generation starts with it.
            self.provider_configs["file"] = file_config
        if _discovery_settings(old) != _discovery_settings(self.config):
            for child in self.children.values():
                if not child.is_worker and not child.superseded:
                    child.superseded = True
                    send_signal(child.pid, signal.SIGTERM)
            if self.expected_providers:
                self._spawn(DISCOVERY)
        if self.expected_providers <= set(self.provider_configs):
            self._publish()

    def _retire_superseded(self, now: float) -> None:
        """Tell superseded workers to drain once every slot has a serving successor.

        Until then the old workers keep serving: a new generation that fails
        to start costs nothing but the log lines saying why.
        """
        waiting = [c for c in self._workers() if c.superseded and c.drain_deadline is None]
        if not waiting or not self._all_slots_serving():
            return
        if self.starting_generation is not None:
            log.info(
                "worker generation %d serving in %d slots; draining %d old workers",
                self.starting_generation,
                self.worker_count,
                len(waiting),
            )
            self.starting_generation = None
        for child in waiting:
            self._tell_to_drain(child, now)

    def _all_slots_serving(self) -> bool:
        acked = self.snapshot["generation"] if self.snapshot is not None else 0
        serving = {
            c.slot
            for c in self._workers()
            if not c.superseded and c.serving and c.snapshot_acked >= acked
        }
        return serving >= set(range(self.worker_count))

    def _tell_to_drain(self, child: Child, now: float) -> None:
        grace = self.config.graceful_timeout
        child.drain_deadline = now + grace + _STOP_MARGIN
        self._send(child, {"type": "stop", "grace": grace})

    def _kill_late_drainers(self, now: float) -> None:
        for child in self._workers():
            if child.drain_deadline is not None and now > child.drain_deadline:
                log.error(
                    "%s (pid %d) is still draining past workers.gracefulTimeout; killing it",
                    child.describe(),
                    child.pid,
                )
                child.drain_deadline = None
                send_signal(child.pid, signal.SIGKILL)

    # -- supervision ----------------------------------------------------------

    def _workers(self) -> Iterator[Child]:
        return (c for c in list(self.children.values()) if c.is_worker)

    def _running(self, slot: int) -> bool:
        return any(c.slot == slot and not c.superseded for c in self.children.values())

    def _sample(self) -> None:
        """Sample each worker's memory and CPU; replace one above workers.maxMemory."""
        for child in self._workers():
            child.sample()
            if self._over_memory(child):
                log.warning(
                    "%s (pid %d) uses %d MiB, above workers.maxMemory (%d MiB); replacing it",
                    child.describe(),
                    child.pid,
                    child.rss >> 20,
                    (self.config.max_memory or 0) >> 20,
                )
                child.superseded = True
                self._spawn(child.slot)

    def _over_memory(self, child: Child) -> bool:
        limit = self.config.max_memory
        if not limit or child.rss <= limit or not child.serving or child.superseded:
            return False
        if child.serving_rss > limit:
            # Its successor would be over the limit from the start: replacing
            # it would only churn. Said once per worker.
            if not child.memory_warned:
                child.memory_warned = True
                log.error(
                    "workers.maxMemory (%d MiB) is below what a fresh worker uses (%d MiB);"
                    " not replacing workers for memory",
                    limit >> 20,
                    child.serving_rss >> 20,
                )
            return False
        return True

    def _kill_stuck(self, now: float) -> None:
        """Kill workers whose event loop has been silent for workers.timeout (as gunicorn)."""
        timeout = self.config.worker_timeout
        for child in self._workers():
            silent = now - max(child.last_seen, child.started)
            if not child.stuck and silent > timeout:
                log.error(
                    "%s (pid %d) sent no heartbeat for %.1fs: its event loop is stuck; killing it",
                    child.describe(),
                    child.pid,
                    silent,
                )
                child.stuck = True
                send_signal(child.pid, signal.SIGKILL)

    def _spawn(self, slot: int) -> None:
        parent_end, child_end = socket.socketpair()
        pid = os.fork()
        if pid == 0:
            parent_end.close()
            self._exec_child(slot, child_end)
        child_end.close()
        child = Child(pid, slot, Channel(parent_end), time.monotonic(), self.generation)
        self.children[pid] = child
        self.selector.register(child.channel, selectors.EVENT_READ, child)
        if child.is_worker and self.snapshot is not None:
            self._send(child, {"type": "snapshot", "snapshot": self.snapshot})
        if child.is_worker and self.status_frame is not None:
            child.channel.send_encoded(self.status_frame)
            self._update_interest(child)
        log.info("started %s (pid %d)", child.describe(), pid)

    def _exec_child(self, slot: int, channel: socket.socket) -> None:
        """In the forked child: drop the master's resources and run the child's main."""
        code = 1
        try:
            signal.set_wakeup_fd(-1)
            self.selector.close()
            os.close(self._wakeup_r)
            os.close(self._wakeup_w)
            for child in self.children.values():
                child.channel.close()
            config = self.config
            main: Callable[[], int]
            if slot == DISCOVERY:
                from portside.master.discovery import run_discovery

                setup_logging("discovery", config.log_level, config.log_file)
                self.listeners.close()
                main = lambda: run_discovery(channel, config)  # noqa: E731
            else:
                setup_logging(f"worker {slot}", config.log_level, config.log_file)
                sockets = self.listeners.for_slot(slot, config.entry_points)
                mine = {sock for socks in sockets.values() for sock in socks}
                for sock in self.listeners.all():
                    if sock not in mine:
                        sock.close()
                main = lambda: run_worker(  # noqa: E731
                    slot, sockets, channel, config, self.counters.view
                )
            # Named once it holds only its own sockets, so that what `ss -ltnp`
            # shows under a name is what that process serves.
            set_process_name("portside-disc" if slot == DISCOVERY else f"portside-w{slot}")
            code = main()
        except KeyboardInterrupt:
            code = 0
        except BaseException:
            logging.getLogger("portside").exception("%s crashed", describe(slot))
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
            if self.stopping or child.superseded or child.slot >= self.worker_count:
                if child.superseded and child.is_worker:
                    log.info("old %s (pid %d) %s", child.describe(), pid, exit_reason(status))
                continue
            now = time.monotonic()
            delay = self.restarts.setdefault(child.slot, Restarts()).after_exit(
                now - child.started, now
            )
            log.warning(
                "%s (pid %d) %s; restarting%s",
                child.describe(),
                pid,
                exit_reason(status),
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
                    "cannot apply a %r message from %s", message.get("type"), child.describe()
                )

    def _handle(self, child: Child, message: dict[str, Any]) -> None:
        """Apply one message: acks and stats from workers, configs and health from discovery."""
        kind = message.get("type")
        if child.is_worker:
            if "connections" in message:
                child.connections = int(message["connections"])
                self._worker_health(child, message)
            if kind == "ack":
                child.snapshot_acked = int(message.get("generation", 0))
            elif kind == "serving":
                child.serving = True
                child.sample()  # before it takes load: what a fresh worker needs
            elif kind == "stats":
                self.totals.add(message)
        elif not child.superseded:
            # A superseded discovery process may still report on its way out.
            if kind == "config":
                self._provider_update(str(message.get("provider")), message.get("config"))
            elif kind == "health":
                self._health_update(message.get("unhealthy"))
            elif kind == "draining":
                self._draining_update(str(message.get("provider")), message.get("servers"))

    def _provider_update(self, provider: str, data: dict[str, Any] | None) -> None:
        if provider not in self.expected_providers:
            return
        if data is None:
            config = self.provider_configs.get(provider, DynamicConfig.EMPTY)
        else:
            try:
                config = parse_dynamic(data, f"provider {provider}")
            except ConfigError as exc:
                for problem in exc.problems:
                    log.error("%s", problem)
                return
        if provider not in self.provider_configs:
            log_provider_found(provider, config)
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
        self.status_due = 0.0
        log.info(
            "configuration generation %d: %d routers, %d services",
            snapshot["generation"],
            len(snapshot["routers"]),
            len(snapshot["services"]),
        )
        # Draining workers get it too: the requests they still serve go
        # where the configuration now says.
        for child in self._workers():
            self._send(child, {"type": "snapshot", "snapshot": snapshot})

    # -- status for the internal services -------------------------------------------

    def _worker_health(self, child: Child, message: dict[str, Any]) -> None:
        """A worker's heartbeat: its open connections per entry point, and its ejections."""
        try:
            child.open_connections = {str(k): int(v) for k, v in message["open"].items()}
            ejected = [(str(service), str(url)) for service, url in message["ejected"]]
        except (KeyError, AttributeError, TypeError, ValueError):
            log.error("%s sent an invalid heartbeat", child.describe())
            return
        if ejected != child.ejected:
            child.ejected = ejected
            self.status_due = 0.0

    def _draining_update(self, provider: str, pairs: Any) -> None:
        """Servers a provider stopped sending traffic to but still has (Docker's draining)."""
        try:
            servers = {(f"{service}@{provider}", str(url)) for service, url in pairs}
        except (TypeError, ValueError):
            log.error("discovery sent an invalid draining report: %r", pairs)
            return
        if self.draining.get(provider) != servers:
            self.draining[provider] = servers
            self.status_due = 0.0

    def _push_status(self, now: float) -> None:
        """Send the workers what the API, dashboard and metrics show: once a second, and
        at once after a change of routes or server states. Only if a worker serves them."""
        self.status_due = now + _SAMPLE_INTERVAL
        if not self.config.observability.entry_points():
            return
        status = build_status(
            StatusInputs(
                config=self.config,
                snapshot=self.snapshot,
                workers=list(self._workers()),
                totals=self.totals,
                draining={pair for pairs in self.draining.values() for pair in pairs},
                providers=self.expected_providers,
                history=self.history,
                started=self.wall_started,
            )
        )
        frame = encode(status)
        if frame == self.status_frame:
            return
        self.status_frame = frame
        for child in self._workers():
            child.channel.send_encoded(frame)
            self._update_interest(child)

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


def _providers(config: StaticConfig) -> set[str]:
    return {
        name
        for name, settings in (("file", config.file_provider), ("docker", config.docker_provider))
        if settings is not None
    }


def _discovery_settings(config: StaticConfig) -> tuple[Any, ...]:
    """What the discovery process runs with: a reload that changes it restarts discovery."""
    return (
        config.file_provider,
        config.docker_provider,
        tuple(config.entry_points),
        config.log_level,
        config.log_file,
    )


def _same_routes(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["routers"] == b["routers"] and a["services"] == b["services"]


def run(config_path: str) -> int:
    """`portside --config FILE`: run the proxy in the foreground until stopped."""
    setup_logging("master")
    try:
        config = load_static(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        return 2
    setup_logging("master", config.log_level, config.log_file)
    try:
        return Arbiter(config).run()
    except OSError as exc:
        if exc.errno == errno.EINTR:
            return 0
        raise
