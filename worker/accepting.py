"""Accepting on an entry point's sockets, with a pause for maxConnections.

asyncio servers cannot pause accepting, only close. So each server is given
a duplicate of the listening socket: closing the server closes that
duplicate, while the socket itself (still open in this worker and in the
master) stays in its SO_REUSEPORT group with its queue. New connections then
wait in the kernel's backlog, and resuming starts a server on a fresh
duplicate that accepts them.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from portside.master.sockets import BACKLOG

log = logging.getLogger("portside.worker")


class Acceptor:
    """Accepts connections for one entry point on its sockets."""

    def __init__(
        self,
        name: str,
        sockets: list[socket.socket],
        factory: Callable[[], asyncio.Protocol],
    ) -> None:
        self.name = name
        self._sockets = sockets
        self._factory = factory
        self._servers: list[asyncio.Server] = []
        self._state = "stopped"  # stopped, accepting, paused, closed
        self._starting: asyncio.Task | None = None

    async def start(self) -> None:
        """Start (or resume) accepting on every socket."""
        if self._state in ("accepting", "closed"):
            return
        loop = asyncio.get_running_loop()
        self._servers = [
            await loop.create_server(self._factory, sock=sock.dup(), backlog=BACKLOG)
            for sock in self._sockets
        ]
        if self._state == "closed":  # closed while the servers were starting
            self._close_servers()
            return
        self._state = "accepting"

    def pause(self) -> None:
        """Stop accepting; the kernel queues new connections meanwhile."""
        if self._state == "accepting":
            self._state = "paused"
            self._close_servers()
            log.warning("entry point %s: maxConnections reached; not accepting", self.name)

    def resume(self) -> None:
        """Accept again, after a pause."""
        if self._state == "paused" and (self._starting is None or self._starting.done()):
            self._starting = asyncio.get_running_loop().create_task(self.start())

    def close(self) -> None:
        """Stop accepting for good (a stop or a drain)."""
        self._state = "closed"
        self._close_servers()
        for sock in self._sockets:
            sock.close()

    def _close_servers(self) -> None:
        for server in self._servers:
            server.close()
        self._servers = []
