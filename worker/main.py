"""A worker process: adopt the slot's listening sockets and serve with uvloop.

The worker learns its routes only from the master, over its socketpair, and
starts accepting once the first snapshot has arrived; until then the kernel
queues connections on the socket it inherited. It then tells the master it
is serving, which is what lets a reload retire the previous generation.

It stops on SIGTERM/SIGINT (at once), on SIGQUIT (gracefully, per entry
point lifeCycle) or on a `stop` message from the master (retired by a reload
or replaced: drain for the given grace). It exits when the master goes away
(the socketpair reaches EOF).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from typing import Any

import uvloop

from portside.master.channel import ChannelError, Message, MessageReader, encode
from portside.master.logs import reopen_logs
from portside.master.static_config import StaticConfig
from portside.worker.accepting import Acceptor
from portside.worker.allocator import fix_malloc_thresholds
from portside.worker.client import ClientConnection
from portside.worker.drain import Phases, drain, quit_phases, retire_phases
from portside.worker.runtime import WorkerRuntime

log = logging.getLogger("portside.worker")

_SWEEP_INTERVAL = 1.0
#: The stop future's result: FAST, or the graceful phases of each entry point.
FAST = "fast"
StopOrder = str | dict[str, Phases]
_SERVING = {"type": "serving"}


class ControlProtocol(asyncio.Protocol):
    """The worker's end of its socketpair with the master."""

    def __init__(self, runtime: WorkerRuntime, ready: asyncio.Future, stop: asyncio.Future) -> None:
        self._runtime = runtime
        self._ready = ready
        self._stop = stop
        self._quit = quit_phases(runtime.config.entry_points)
        self._reader = MessageReader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._reader.feed(data)
        except ChannelError as exc:
            log.error("bad message from the master: %s", exc)
            self._request_stop(self._quit)
            return
        for message in messages:
            self._handle(message)

    def connection_lost(self, exc: Exception | None) -> None:
        log.info("the master went away; stopping")
        self._request_stop(self._quit)

    def send(self, message: Message) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode(message))

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "snapshot":
            snapshot = message["snapshot"]
            self._runtime.apply_snapshot(snapshot)
            self.send({"type": "ack", "generation": snapshot["generation"]})
            if not self._ready.done():
                self._ready.set_result(None)
        elif kind == "status":
            self._runtime.status.update(message)
        elif kind == "stop":
            # Retired by a reload, or replaced for using too much memory.
            grace = float(message["grace"])
            self._request_stop(retire_phases(self._runtime.config.entry_points, grace))

    def _request_stop(self, how: StopOrder) -> None:
        if not self._stop.done():
            self._stop.set_result(how)


def run_worker(
    slot: int,
    sockets: dict[str, list[socket.socket]],
    control: socket.socket,
    config: StaticConfig,
    counters: memoryview,
) -> int:
    """Serve until told to stop; return the process exit code."""
    # Handlers inherited from the master would write to its wake-up pipe.
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    # Process-group signals meant for the master must not kill workers.
    # (SIGUSR1, forwarded by the master, reopens the log file: set in _serve.)
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)
    # What the master built before the fork is either kept for the worker's
    # life or dead here (master-only state): either way better left uncollected
    # than copied. Out of the collector's sight, those objects' headers are
    # never written, and their pages stay shared with the master. After 15 s
    # of new connections, a worker's private memory was 5.8 MB with this,
    # 10.9 MB without (smaps_rollup).
    gc.freeze()
    if not fix_malloc_thresholds():
        log.info("worker %d: no glibc mallopt; body buffers use the allocator's defaults", slot)
    if config.cpu_affinity:
        # One worker per core on bare metal: no migrations, warm caches.
        os.sched_setaffinity(0, {slot % (os.cpu_count() or 1)})
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(slot, sockets, control, config, counters))
    return 0


async def _serve(
    slot: int,
    sockets: dict[str, list[socket.socket]],
    control: socket.socket,
    config: StaticConfig,
    counters: memoryview,
) -> None:
    loop = asyncio.get_running_loop()
    runtime = WorkerRuntime(config, counters)
    ready: asyncio.Future = loop.create_future()
    stop: asyncio.Future = loop.create_future()

    def request_stop(how: StopOrder) -> None:
        if not stop.done():
            stop.set_result(how)

    loop.add_signal_handler(signal.SIGTERM, request_stop, FAST)
    loop.add_signal_handler(signal.SIGINT, request_stop, FAST)
    loop.add_signal_handler(signal.SIGQUIT, request_stop, quit_phases(config.entry_points))
    loop.add_signal_handler(signal.SIGUSR1, _reopen_logs, runtime)

    _, master = await loop.create_unix_connection(
        lambda: ControlProtocol(runtime, ready, stop), sock=control
    )
    # Heartbeats start before the first snapshot: the master watches the
    # loop from the moment the worker exists.
    sweeper = _Sweeper(runtime, master)
    await asyncio.wait([ready, stop], return_when=asyncio.FIRST_COMPLETED)
    if not stop.done():
        for name, socks in sockets.items():
            ep = runtime.entry_points[name]
            ep.acceptor = Acceptor(name, socks, lambda ep=ep: ClientConnection(runtime, ep))
            await ep.acceptor.start()
        master.send(_SERVING)
        log.info("worker %d serving configuration generation %d", slot, runtime.generation)
    how = await stop
    if isinstance(how, dict):
        # The sweeper keeps running: heartbeats show the master the drain is alive.
        await drain(runtime, how)
    else:
        for ep in runtime.entry_points.values():
            if ep.acceptor is not None:
                ep.acceptor.close()
    sweeper.stop()
    runtime.close()


def _reopen_logs(runtime: WorkerRuntime) -> None:
    """SIGUSR1 (logrotate): the log file and the access log."""
    reopen_logs()
    runtime.reopen_access_log()


class _Sweeper:
    """Once a second, without a task: sweep idle connections, report the counters, and
    so show the master that the event loop still turns."""

    def __init__(self, runtime: WorkerRuntime, master: ControlProtocol) -> None:
        self._runtime = runtime
        self._master = master
        self._handle = runtime.loop.call_later(_SWEEP_INTERVAL, self._tick)

    def _tick(self) -> None:
        self._runtime.sweep()
        self.report()
        self._handle = self._runtime.loop.call_later(_SWEEP_INTERVAL, self._tick)

    def report(self) -> None:
        """Send the counters, which double as the heartbeat, the open connections and
        the servers ejected here."""
        message = self._runtime.stats.take() or {"type": "beat"}
        message["connections"] = len(self._runtime.connections)
        message.update(self._runtime.health_report())
        self._master.send(message)

    def stop(self) -> None:
        """Stop ticking, after a last report so that nothing counted is lost."""
        self._handle.cancel()
        self.report()
