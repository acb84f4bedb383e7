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

    When the worker count shrinks and net.ipv4.tcp_migrate_req is 0, closing
    the sockets of the removed slots would reset the connections queued on
    them. Those sockets are kept instead, and each is served by a remaining
    worker (slot modulo the worker count): nothing is lost, at the price of
    that worker taking a larger share of new connections until the count
    grows back. With tcp_migrate_req=1 the kernel moves the queue, so they
    are closed.
    """

    def __init__(self) -> None:
        self._socks: dict[tuple[str, int, int], socket.socket] = {}
        self._slots = 0  # the worker count the sockets were last arranged for

    def update(self, entry_points: dict[str, EntryPoint], slots: int) -> None:
        """Have slots 0..slots-1 of every entry point's address, and nothing else needed.

        Missing sockets are bound first, all or none: if one cannot be bound,
        the ones just bound are closed, OSError is raised and nothing changes.
        Sockets no longer wanted are then closed (see the class docstring for
        those of removed slots); a worker still holding its copy keeps
        accepting on it until it stops.
        """
        addresses = {(ep.host, ep.port) for ep in entry_points.values()}
        wanted = {(host, port, slot) for host, port in addresses for slot in range(slots)}
        added: dict[tuple[str, int, int], socket.socket] = {}
        try:
            for key in sorted(wanted - set(self._socks)):
                added[key] = bind_listener(key[0], key[1])
        except OSError:
            for sock in added.values():
                sock.close()
            raise
        self._socks.update(added)
        self._slots = slots
        keep_orphans = migrate_req() is not True
        for key in set(self._socks) - wanted:
            if not (keep_orphans and key[:2] in addresses):
                self._socks.pop(key).close()

    def for_slot(
        self, slot: int, entry_points: dict[str, EntryPoint]
    ) -> dict[str, list[socket.socket]]:
        """The sockets a worker in this slot serves, by entry point name.

        Its own, plus those of removed slots that map onto it.
        """
        return {
            name: [
                sock
                for (host, port, s), sock in sorted(self._socks.items())
                if (host, port) == (ep.host, ep.port) and s % self._slots == slot
            ]
            for name, ep in entry_points.items()
        }

    def orphans(self) -> int:
        """How many sockets belong to removed slots (kept; see the class docstring)."""
        return sum(1 for _, _, slot in self._socks if slot >= self._slots)

    def all(self) -> list[socket.socket]:
        return list(self._socks.values())

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()


def migrate_req() -> bool | None:
    """Whether net.ipv4.tcp_migrate_req is on here; None where the kernel lacks it (< 5.14)."""
    try:
        with open(_MIGRATE_REQ) as f:
            return f.read().strip() != "0"
    except OSError:
        return None


def log_migrate_req() -> None:
    """Say what net.ipv4.tcp_migrate_req means for shrinking the worker count."""
    enabled = migrate_req()
    if enabled:
        log.info(
            "net.ipv4.tcp_migrate_req=1: when the worker count shrinks, the connections "
            "queued on a removed worker's socket move to the remaining workers"
        )
        return
    setting = "is not available (Linux < 5.14)" if enabled is None else "=0"
    log.info(
        "net.ipv4.tcp_migrate_req%s: when the worker count shrinks, a removed worker's "
        "sockets stay open and a remaining worker serves them, since closing them would "
        "reset the connections queued there; set it to 1 to have them closed and the "
        "queue moved instead",
        setting,
    )
