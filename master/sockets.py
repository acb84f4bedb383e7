"""Listening sockets: one SO_REUSEPORT socket per worker slot and entry point.

Linux hashes each new connection onto one socket of a SO_REUSEPORT group,
whatever the load of the process behind it. Closing one socket of the group
resets every connection still queued on it (the reload bug nginx and HAProxy
document). So the master creates the sockets, hands slot *i*'s socket to
whichever worker runs in slot *i*, and keeps every one open: a respawned
worker inherits the same queue and nothing queued is lost.
"""

from __future__ import annotations

import logging
import socket

from portside.master.static_config import EntryPoint

log = logging.getLogger("portside.master")

#: The kernel caps this at net.core.somaxconn (4096 on current kernels).
BACKLOG = socket.SOMAXCONN
_MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req"


def bind_listener(host: str, port: int) -> socket.socket:
    """Bind and listen on a new SO_REUSEPORT socket for host:port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


class ListenerSet:
    """The master's listening sockets, keyed by (host, port, slot).

    Keyed by address rather than entry point name, so that a reload which
    keeps an address keeps its sockets (and whatever is queued on them),
    even if the entry point was renamed.
    """

    def __init__(self) -> None:
        self._socks: dict[tuple[str, int, int], socket.socket] = {}

    def update(self, entry_points: dict[str, EntryPoint], slots: int) -> None:
        """Have exactly slots 0..slots-1 of every entry point's address.

        Missing sockets are bound first, all or none: if one cannot be bound,
        the ones just bound are closed, OSError is raised and nothing changes.
        Sockets no longer wanted are then closed; a worker still holding its
        copy keeps accepting on it until it stops.
        """
        wanted = {(ep.host, ep.port, slot) for ep in entry_points.values() for slot in range(slots)}
        added: dict[tuple[str, int, int], socket.socket] = {}
        try:
            for key in sorted(wanted - set(self._socks)):
                added[key] = bind_listener(key[0], key[1])
        except OSError:
            for sock in added.values():
                sock.close()
            raise
        self._socks.update(added)
        for key in set(self._socks) - wanted:
            self._socks.pop(key).close()

    def for_slot(self, slot: int, entry_points: dict[str, EntryPoint]) -> dict[str, socket.socket]:
        """The sockets a worker in this slot serves, by entry point name."""
        return {name: self._socks[ep.host, ep.port, slot] for name, ep in entry_points.items()}

    def all(self) -> list[socket.socket]:
        return list(self._socks.values())

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()


def log_migrate_req() -> None:
    """Say what net.ipv4.tcp_migrate_req means for shrinking the worker count."""
    try:
        with open(_MIGRATE_REQ) as f:
            value = f.read().strip()
    except OSError:
        log.info(
            "net.ipv4.tcp_migrate_req is not available (Linux < 5.14): removing a worker "
            "resets the connections queued on its socket"
        )
        return
    if value == "0":
        log.info(
            "net.ipv4.tcp_migrate_req=0: removing a worker resets the connections queued "
            "on its socket; set it to 1 to have the kernel move them to another worker"
        )
    else:
        log.info(
            "net.ipv4.tcp_migrate_req=%s: connections queued on a removed worker's socket "
            "move to the remaining workers",
            value,
        )
