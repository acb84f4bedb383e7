"""The access log: one line per request, JSON or Common Log Format, as Traefik writes them.

Each worker buffers its lines and writes them with one write(2) per batch of
whole lines, at least once a second and at exit. The file is opened with
O_APPEND, so every write lands whole at the end of the file and workers
never interleave mid-line. On a pipe (stdout) the kernel only promises that
for writes of at most PIPE_BUF bytes, so batches stay within that there.
SIGUSR1 reopens the file by name, for logrotate.
"""

from __future__ import annotations

import json
import logging
import os
import select
import stat
import sys
import time
from typing import TYPE_CHECKING

from portside.master.observability_config import AccessLogConfig

if TYPE_CHECKING:
    from portside.worker.exchange import Exchange

log = logging.getLogger("portside.worker")

#: Past this many buffered bytes a batch is written at once, without waiting for the tick.
_FLUSH_AT = 64 * 1024


class AccessLog:
    """One worker's buffered access log."""

    def __init__(self, path: str | None, json_format: bool) -> None:
        self._path = path
        self._json = json_format
        self._lines: list[bytes] = []
        self._size = 0
        self._fd = -1
        self._batch_limit = _FLUSH_AT
        self._open()

    def log(self, exchange: Exchange, duration: float) -> None:
        """Buffer the line for a finished request."""
        line = _json_line(exchange, duration) if self._json else _common(exchange, duration)
        self._lines.append(line)
        self._size += len(line)
        if self._size >= _FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        """Write out the buffered lines, in batches of whole lines."""
        lines, self._lines, self._size = self._lines, [], 0
        batch: list[bytes] = []
        size = 0
        for line in lines:
            if batch and size + len(line) > self._batch_limit:
                self._write(b"".join(batch))
                batch, size = [], 0
            batch.append(line)
            size += len(line)
        if batch:
            self._write(b"".join(batch))

    def reopen(self) -> None:
        """Flush, then write to a new file of the same name (SIGUSR1)."""
        self.flush()
        if self._path is not None:
            os.close(self._fd)
            self._open()

    def close(self) -> None:
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _open(self) -> None:
        if self._path is None:
            # A copy of stdout, so that closing it never closes the process's own.
            self._fd = os.dup(sys.stdout.fileno())
        else:
            self._fd = os.open(
                self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
        regular = stat.S_ISREG(os.fstat(self._fd).st_mode)
        self._batch_limit = _FLUSH_AT if regular else select.PIPE_BUF

    def _write(self, data: bytes) -> None:
        try:
            os.write(self._fd, data)
        except OSError as exc:
            # A full disk must not take the proxy down; the lines are lost.
            log.error("cannot write the access log: %s", exc)


def _json_line(exchange: Exchange, duration: float) -> bytes:
    route = exchange.route
    server = exchange.server
    record = {
        "ClientHost": exchange.client.client_ip,
        "RequestMethod": exchange.method,
        "RequestPath": exchange.target.decode("latin-1"),
        "RequestProtocol": "HTTP/1.0" if exchange.http10 else "HTTP/1.1",
        "RequestHost": exchange.host,
        "DownstreamStatus": exchange.status or 499,
        "OriginStatus": exchange.origin_status,
        "Duration": int(duration * 1e9),  # nanoseconds, as Traefik writes it
        "EntryPointName": exchange.client.entry_point.name,
        "RouterName": route.name if route is not None else "",
        "ServiceName": route.service.name if route is not None else "",
        "ServiceURL": server.url if server is not None else "",
        "RetryAttempts": exchange.retry_attempts,
        "StartUTC": _utc(time.time() - duration),
    }
    return json.dumps(record, separators=(",", ":")).encode() + b"\n"


def _common(exchange: Exchange, duration: float) -> bytes:
    """Traefik's Common Log Format line (CLF plus router, server and duration)."""
    route = exchange.route
    server = exchange.server
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(time.time() - duration))
    referer = (exchange.header_values("referer") or ["-"])[0]
    agent = (exchange.header_values("user-agent") or ["-"])[0]
    protocol = "HTTP/1.0" if exchange.http10 else "HTTP/1.1"
    return (
        f'{exchange.client.client_ip} - - [{stamp}] "{exchange.method} '
        f'{exchange.target.decode("latin-1")} {protocol}" {exchange.status or 499} - '
        f'"{referer}" "{agent}" - "{route.name if route is not None else "-"}" '
        f'"{server.url if server is not None else "-"}" {duration * 1000:.0f}ms\n'
    ).encode()


def _utc(timestamp: float) -> str:
    """RFC 3339 in UTC with microseconds, as Traefik's StartUTC."""
    seconds = int(timestamp)
    micros = int((timestamp - seconds) * 1e6)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"


def open_access_log(config: AccessLogConfig | None) -> AccessLog | None:
    """The worker's access log, or None when it is off or cannot be opened (logged)."""
    if config is None:
        return None
    try:
        return AccessLog(config.file_path, config.format == "json")
    except OSError as exc:
        log.error(
            "cannot open the access log %s: %s; requests are not logged", config.file_path, exc
        )
        return None
