"""The discovery process: runs the providers and the active health checks.

It is a child of the master, forked before any thread exists. Providers may
block or use threads here (the Docker provider runs in a thread of its own)
because this process never forks. Each provider's configuration is sent to the master, in
Traefik's dynamic-configuration schema, whenever it changes; the set of
servers that fail their health checks is sent whenever it changes.
"""

from __future__ import annotations

import logging
import select
import signal
import socket
import threading
from typing import Any

from portside.master.channel import encode
from portside.master.dynamic_config import DynamicConfig, parse_dynamic
from portside.master.errors import ConfigError
from portside.master.file_provider import POLL_INTERVAL, FileWatcher
from portside.master.health_checks import HealthChecker
from portside.master.logs import reopen_logs
from portside.master.static_config import StaticConfig

log = logging.getLogger("portside.discovery")


def to_traefik_schema(config: DynamicConfig) -> dict[str, Any]:
    """The configuration as a dict in Traefik's schema, which the master parses back."""
    return config.schema()


def run_discovery(channel: socket.socket, config: StaticConfig) -> int:
    """Run the configured providers until the master goes away; return an exit code."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    for sig in (signal.SIGHUP, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, lambda signum, frame: reopen_logs())
    channel.setblocking(True)
    send_lock = threading.Lock()

    def send(message: dict[str, Any]) -> None:
        # The Docker provider and the health checks send from their own threads.
        with send_lock:
            channel.sendall(encode(message))

    def report(provider: str, body: dict[str, Any] | None) -> None:
        send({"type": "config", "provider": provider, "config": body})

    checker = HealthChecker(
        lambda unhealthy: send({"type": "health", "unhealthy": sorted(map(list, unhealthy))})
    )

    def report_file(dynamic: DynamicConfig | None) -> None:
        report("file", None if dynamic is None else to_traefik_schema(dynamic))
        if dynamic is not None:
            checker.update("file", dynamic)

    def report_docker(body: dict[str, Any]) -> None:
        report("docker", body)
        try:
            dynamic = parse_dynamic(body, "provider docker")
        except ConfigError:
            return  # the master parses the same body and logs the problems
        checker.update("docker", dynamic)

    if config.docker_provider is not None:
        # Imported here: the Docker SDK (with requests) costs a few hundred
        # milliseconds of start-up that file-only setups need not pay.
        from portside.master.docker_provider import start_watcher

        start_watcher(
            config.docker_provider,
            config.router_entry_points,
            report_docker,
            lambda servers: send({"type": "draining", "provider": "docker", "servers": servers}),
        )
    watcher = FileWatcher(config.file_provider) if config.file_provider else None
    if watcher is not None:
        _, dynamic = watcher.poll()
        report_file(dynamic)
        if not config.file_provider.watch:  # type: ignore[union-attr]
            watcher = None
    while True:
        # Waiting on the channel doubles as the poll timer and notices the
        # master's death (EOF) at once.
        readable, _, _ = select.select([channel], [], [], POLL_INTERVAL)
        if readable and not channel.recv(4096):
            return 0
        if watcher is not None:
            changed, dynamic = watcher.poll()
            if changed and dynamic is not None:
                log.info("file provider: configuration changed")
                report_file(dynamic)
