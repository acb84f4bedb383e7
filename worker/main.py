"""A worker process: adopt the slot's listening sockets and serve with uvloop.

The worker learns its routes only from the master, over its socketpair, and
starts accepting once the first snapshot has arrived; until then the kernel
queues connections on the socket it inherited. It exits when the master goes
away (the socketpair reaches EOF).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from typing import Any

import uvloop

from portside.master.channel import ChannelError, Message, MessageReader, encode
from portside.master.sockets import BACKLOG
from portside.master.static_config import StaticConfig
from portside.worker.client import ClientConnection
from portside.worker.runtime import WorkerRuntime

log = logging.getLogger("portside.worker")

#: How long a graceful stop waits for requests in flight (Traefik's graceTimeOut default).
GRACE_TIMEOUT = 10.0
_SWEEP_INTERVAL = 1.0
FAST, GRACEFUL = "fast", "graceful"
_HEARTBEAT = {"type": "beat"}


class ControlProtocol(asyncio.Protocol):
    """The worker's end of its socketpair with the master."""

    def __init__(self, runtime: WorkerRuntime, ready: asyncio.Future, stop: asyncio.Future) -> None:
        self._runtime = runtime
        self._ready = ready
        self._stop = stop
        self._reader = MessageReader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._reader.feed(data)
        except ChannelError as exc:
            log.error("bad message from the master: %s", exc)
            self._request_stop(GRACEFUL)
            return
        for message in messages:
            self._handle(message)

    def connection_lost(self, exc: Exception | None) -> None:
        log.info("the master went away; stopping")
        self._request_stop(GRACEFUL)

    def send(self, message: Message) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode(message))

    def _handle(self, message: dict[str, Any]) -> None:
        if message.get("type") == "snapshot":
            snapshot = message["snapshot"]
            self._runtime.apply_snapshot(snapshot)
            self.send({"type": "ack", "generation": snapshot["generation"]})
            if not self._ready.done():
                self._ready.set_result(None)

    def _request_stop(self, how: str) -> None:
        if not self._stop.done():
            self._stop.set_result(how)


def run_worker(
    slot: int,
    sockets: dict[str, socket.socket],
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
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)
    if config.cpu_affinity:
        # One worker per core on bare metal: no migrations, warm caches.
        os.sched_setaffinity(0, {slot % (os.cpu_count() or 1)})
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(slot, sockets, control, config, counters))
    return 0


async def _serve(
    slot: int,
    sockets: dict[str, socket.socket],
    control: socket.socket,
    config: StaticConfig,
    counters: memoryview,
) -> None:
    loop = asyncio.get_running_loop()
    runtime = WorkerRuntime(config, counters)
    ready: asyncio.Future = loop.create_future()
    stop: asyncio.Future = loop.create_future()

    def request_stop(how: str) -> None:
        if not stop.done():
            stop.set_result(how)

    loop.add_signal_handler(signal.SIGTERM, request_stop, FAST)
    loop.add_signal_handler(signal.SIGINT, request_stop, FAST)
    loop.add_signal_handler(signal.SIGQUIT, request_stop, GRACEFUL)

    _, master = await loop.create_unix_connection(
        lambda: ControlProtocol(runtime, ready, stop), sock=control
    )
    # Heartbeats start before the first snapshot: the master watches the
    # loop from the moment the worker exists.
    sweeper = _Sweeper(runtime, master)
    await asyncio.wait([ready, stop], return_when=asyncio.FIRST_COMPLETED)
    servers = []
    if not stop.done():
        for name, sock in sockets.items():
            ep = runtime.entry_points[name]
            servers.append(
                await loop.create_server(
                    lambda ep=ep: ClientConnection(runtime, ep), sock=sock, backlog=BACKLOG
                )
            )
        log.info("worker %d serving generation %d", slot, runtime.generation)
    how = await stop
    for server in servers:
        server.close()
    sweeper.cancel()
    if how == GRACEFUL:
        await _drain(runtime)


async def _drain(runtime: WorkerRuntime) -> None:
    """Let requests in flight finish, for at most GRACE_TIMEOUT seconds."""
    deadline = runtime.loop.time() + GRACE_TIMEOUT
    while runtime.connections and runtime.loop.time() < deadline:
        runtime.close_idle()
        await asyncio.sleep(0.05)
    if runtime.connections:
        log.warning("grace period over; closing %d connections", len(runtime.connections))


class _Sweeper:
    """Once a second, without a task: sweep idle connections, report the counters, and
    so show the master that the event loop still turns."""

    def __init__(self, runtime: WorkerRuntime, master: ControlProtocol) -> None:
        self._runtime = runtime
        self._master = master
        self._handle = runtime.loop.call_later(_SWEEP_INTERVAL, self._tick)

    def _tick(self) -> None:
        self._runtime.sweep()
        # The counters double as the heartbeat; with nothing counted, a bare one.
        self._master.send(self._runtime.stats.take() or _HEARTBEAT)
        self._handle = self._runtime.loop.call_later(_SWEEP_INTERVAL, self._tick)

    def cancel(self) -> None:
        self._handle.cancel()
